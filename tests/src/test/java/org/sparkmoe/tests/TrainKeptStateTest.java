package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.SparkEnv;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerJobStart;
import org.apache.spark.storage.BlockId;
import org.apache.spark.storage.BlockManager;
import org.apache.spark.storage.BlockManagerMaster;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.train.TrainJob;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.train.TrainState;
import scala.runtime.AbstractFunction1;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

/**
 * The state a round leaves on the executors: when its blocks are gone (as with the executor that held them), the
 * driver runs the rounds since the last state it read again and ends with the same bits as a run that lost nothing,
 * giving each round to the listener once.
 */
class TrainKeptStateTest {
    private static TrainPlan plan;

    /** 4 rounds of 2 steps on 2 partitions, w1 and w3 plus the routers, on the first 40,000 characters of sysadmin. */
    @BeforeAll
    static void plan(@TempDir Path dir) throws Exception {
        Path data = Fixtures.sysadminExcerpt(dir);
        Configuration conf = new Configuration();
        plan = new TrainPlan(Paths.qualify(Fixtures.tinyModel().toString(), conf),
                List.of(Paths.qualify(data.toString(), conf)), TextSplit.TRAIN, 32, 2, 8, 2, 2,
                Paths.qualify(dir.resolve("out").toString(), conf), 1, false, List.of(Projection.GATE, Projection.UP),
                4, 8, true, 1e-3, 2, 0.01, 1.0, null, 7);
    }

    @Test
    void aLostKeptStateIsRecomputedFromTheDriversLastState() {
        lostAfterRound(2, 1, 2);
    }

    /**
     * The mean the driver has just read (for a checkpoint) is lost before the next round reads it from the executor
     * that kept it (a YARN run lost it so): the driver puts its copy back and that round runs again; nothing before it.
     */
    @Test
    void aLostKeptStateTheDriverHasReadIsPutBackFromItsCopy() {
        lostAfterRound(1, 1, 2);
    }

    /**
     * Runs the plan whole (local rounds: a job per checkpoint interval), then again with a job per round, as on a
     * cluster, the driver reading the state after round index {@code read} and every
     * kept block removed after round index {@code removed}: the same bits, every round given to the listener once,
     * and round index {@code rerun} run twice.
     */
    private static void lostAfterRound(int removed, int read, int rerun) {
        TrainState start;
        try (ModelCache.Lease model = ModelCache.lease(plan.model())) {
            start = TrainState.init(model.model(), plan.loraSpec(), plan.seed(), DataType.FLOAT);
        }
        TrainState whole;
        try (JavaSparkContext sc = SparkContexts.start("train-kept-test-whole", "local[2]")) {
            whole = TrainJob.run(sc, plan, start, 0, (round, state) -> { });
        }
        List<Long> reported = new ArrayList<>();
        AtomicInteger rerunJobs = new AtomicInteger();
        TrainState lost;
        try (JavaSparkContext sc = SparkContexts.start("train-kept-test-lost", "local[2]")) {
            sc.sc().conf().set(SparkLimits.LOCAL_ROUNDS_KEY, "false");     // a job per round, as on a cluster
            sc.sc().addSparkListener(new SparkListener() {
                @Override
                public void onJobStart(SparkListenerJobStart job) {
                    String description = job.properties().getProperty("spark.job.description", "");
                    if (description.startsWith("train: round " + (rerun + 1) + "/4")) {
                        rerunJobs.incrementAndGet();
                    }
                }
            });
            lost = TrainJob.run(sc, plan, start, 0, (round, state) -> {
                reported.add(round.round());
                if (round.round() == read) {
                    state.get();        // the driver now holds this round's state, as after a checkpoint
                }
                if (round.round() == removed) {
                    assertFalse(removeKeptBlocks().isEmpty(), "round " + (removed + 1) + " kept no block");
                }
            });
        }
        assertEquals(List.of(0L, 1L, 2L, 3L), reported, "every round given to the listener once");
        assertEquals(2, rerunJobs.get(), "round " + (rerun + 1) + " ran again from the state after round " + (read + 1));
        assertEquals(whole.step(), lost.step());
        for (Map.Entry<String, INDArray> e : whole.params().entrySet()) {
            String key = e.getKey();
            assertArrayEquals(floats(e.getValue()), floats(lost.params().get(key)), key);
            assertArrayEquals(floats(whole.m().get(key)), floats(lost.m().get(key)), key);
            assertArrayEquals(floats(whole.v().get(key)), floats(lost.v().get(key)), key);
        }
    }

    /** Removes every block train keeps, as an executor loss would (local mode: one block manager); their names. */
    private static List<String> removeKeptBlocks() {
        BlockManager blocks = SparkEnv.get().blockManager();
        BlockManagerMaster master = blocks.master();
        List<String> names = new ArrayList<>();
        scala.collection.Iterator<BlockId> ids = master.getMatchingBlockIds(new AbstractFunction1<BlockId, Object>() {
            @Override
            public Object apply(BlockId id) {
                return id.name().startsWith("test_sparkmoe_train_");
            }
        }, true).iterator();
        while (ids.hasNext()) {
            BlockId id = ids.next();
            blocks.removeBlock(id, true);
            names.add(id.name());
        }
        return names;
    }

    private static float[] floats(INDArray a) {
        return a.dup('c').data().asFloat();
    }
}
