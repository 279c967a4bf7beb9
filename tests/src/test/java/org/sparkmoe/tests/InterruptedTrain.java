package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.train.TrainJob;
import org.sparkmoe.driver.train.TrainOutputs;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.train.TrainState;

import static org.junit.jupiter.api.Assertions.assertThrows;

/** A training run cut off on local[2] right after round {@code lastRound} was checkpointed, for --resume tests. */
final class InterruptedTrain {
    private InterruptedTrain() {
    }

    private static final class Stop extends RuntimeException {
    }

    static void stopAfterRound(TrainPlan plan, int lastRound) {
        TrainOutputs outputs = new TrainOutputs(plan, new Configuration());
        try (JavaSparkContext sc = SparkContexts.start("train-test", "local[2]")) {
            TrainState start;
            try (ModelCache.Lease model = ModelCache.lease(plan.model())) {
                start = TrainState.init(model.model(), plan.loraSpec(), plan.seed(), DataType.FLOAT);
            }
            assertThrows(Stop.class, () -> TrainJob.run(sc, plan, start, 0, (round, state) -> {
                outputs.roundDone(round, state);
                if (round.round() == lastRound) {
                    throw new Stop();
                }
            }));
        }
    }
}
