package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
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
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;
import org.sparkmoe.train.GradClip;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.train.TrainOptions;
import org.sparkmoe.train.TrainState;
import org.sparkmoe.train.TrainStep;
import org.sparkmoe.train.WindowSampler;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code train --averaging gradients} on a real local[2] SparkContext: P partitions' gradients averaged by the round
 * tree and one AdamW step taken on their mean, the same bits as that computation on one process, whether the mean
 * forms in a task of local rounds, on the driver or in the shuffle (the step then in a job of its own); at one partition, the same bits as
 * parameter averaging (one step per round either way).
 */
class GradientAveragingTest {
    private static final int WINDOW = 32;
    private static final int BATCH = 2;
    private static final long STEPS = 3;
    private static String data;
    private static String out;
    private static JavaSparkContext sc;

    @BeforeAll
    static void start(@TempDir Path dir) throws Exception {
        data = Paths.qualify(Fixtures.sysadminExcerpt(dir).toString(), new Configuration());
        out = Paths.qualify(dir.resolve("out").toString(), new Configuration());   // not written: no outputs here
        sc = SparkContexts.start("gradient-averaging-test", "local[2]");
    }

    @AfterAll
    static void stop() {
        if (sc != null) {
            sc.close();
        }
    }

    /** 3 steps of 2 windows per partition, w1 and w2 at rank 4 plus the routers, clip at 0.05 (it clips). */
    private static TrainPlan plan(int partitions, TrainPlan.Averaging averaging) {
        Configuration conf = new Configuration();
        TrainPlan flat = new TrainPlan(Paths.qualify(Fixtures.tinyModel().toString(), conf), List.of(data),
                TextSplit.TRAIN, WINDOW, BATCH, STEPS, 1, partitions, out, 1, false,
                List.of(Projection.GATE, Projection.DOWN), 4, 8, true, 3e-3, 1, 0.01, 0.05, null, 11);
        return new TrainPlan(flat.model(), flat.windows(), flat.rounds().withAveraging(averaging),
                flat.options().withPassWorkspace(true), flat.out(), false, flat.device());   // as train's plan gives
    }

    private static TrainState initial(TrainPlan plan) {
        try (ModelCache.Lease model = ModelCache.lease(plan.model())) {
            return TrainState.init(model.model(), plan.loraSpec(), plan.seed(), DataType.FLOAT);
        }
    }

    private static TrainState train(TrainPlan plan) {
        return TrainJob.run(sc, plan, initial(plan), 0, (round, state) -> { });
    }

    /**
     * What the job must compute, on this thread: every step, each partition's gradients at the state on the batch
     * its sampler picks from its windows (window i belongs to partition i mod P), their mean over the fixed tree
     * (two partitions: one mean), the clip factor of its global norm, one AdamW step per chunk.
     */
    private static TrainState byHand(TrainPlan plan) {
        int[] tokens = Tokenizers.cached(plan.model()).encode(TextSplit.TRAIN.apply(TextFiles.readUtf8(data)));
        int[][] windows = Windows.cut(tokens, WINDOW);
        int p = plan.partitions();
        TrainOptions options = plan.options();
        TrainState state = initial(plan);
        try (ModelCache.Lease model = ModelCache.lease(plan.model())) {
            for (long step = 0; step < STEPS; step++) {
                List<StateMean> mean = null;
                for (int part = 0; part < p; part++) {
                    List<int[]> own = new ArrayList<>();
                    for (int i = part; i < windows.length; i += p) {
                        own.add(windows[i]);
                    }
                    int[] picked = new WindowSampler(plan.seed(), part, own.size()).batch(step, BATCH);
                    int[][] batch = Arrays.stream(picked).mapToObj(own::get).toArray(int[][]::new);
                    Map<String, INDArray> grads = TrainStep.evaluate(model.model(), state, batch, options).grads();
                    List<StateMean> g = StateMean.splitGradients(state, grads, BATCH, StateMean.CHUNK_BYTES);
                    if (mean == null) {
                        mean = g;
                    } else {
                        for (int c = 0; c < g.size(); c++) {
                            mean.set(c, mean.get(c).mean(g.get(c)));
                        }
                    }
                }
                double[] squares = mean.stream().flatMapToDouble(c -> Arrays.stream(c.squares())).toArray();
                double coef = GradClip.coefficient(GradClip.total(squares), options.maxGradNorm());
                assertTrue(coef < 1, "the test's clip applies");
                List<StateMean> chunks = StateMean.split(state, 1, StateMean.CHUNK_BYTES);
                List<StateMean> next = new ArrayList<>();
                for (int c = 0; c < chunks.size(); c++) {
                    next.add(chunks.get(c).stepped(mean.get(c), coef, options.schedule().at(step),
                            options.optimizer()));
                }
                state = StateMean.join(next);
            }
        }
        return state;
    }

    @Test
    void twoPartitionsTakeOneStepOnTheirMeanGradientOnTheDriverOrOnTheExecutors() {
        TrainPlan plan = plan(2, TrainPlan.Averaging.GRADIENTS);
        TrainState expected = byHand(plan);
        TrainStates.assertSameBits(expected, train(plan));    // local rounds: the first task forms the mean
        sc.sc().conf().set(SparkLimits.LOCAL_ROUNDS_KEY, "false");
        try {
            TrainStates.assertSameBits(expected, train(plan));         // the mean forms on the driver (small state)
        } finally {
            sc.sc().conf().remove(SparkLimits.LOCAL_ROUNDS_KEY);
        }
        String key = SparkLimits.DRIVER_AVERAGING_KEY;
        sc.sc().conf().set(key, "0");                                   // the shuffle's tree, the step in a job
        try {
            TrainStates.assertSameBits(expected, train(plan));
        } finally {
            sc.sc().conf().remove(key);
        }
        TrainState parameters = train(plan(2, TrainPlan.Averaging.PARAMETERS));
        assertFalse(Arrays.equals(flat(expected), flat(parameters)), "parameter averaging is another algorithm");
    }

    @Test
    void onOnePartitionGradientAveragingIsParameterAveraging() {
        TrainStates.assertSameBits(train(plan(1, TrainPlan.Averaging.PARAMETERS)),
                train(plan(1, TrainPlan.Averaging.GRADIENTS)));
    }

    @Test
    void gradientAveragingTakesOneStepPerRound() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new TrainPlan.Rounds(6, 2, 2, 1, TrainPlan.Averaging.GRADIENTS));
        assertEquals("--averaging gradients takes one optimiser step per round, on the mean of the partitions' "
                + "gradients: --averaging-frequency must be 1, got 2", e.getMessage());
    }

    private static float[] flat(TrainState s) {
        List<Float> out = new ArrayList<>();
        for (INDArray a : s.params().values()) {
            for (float x : a.dup('c').data().asFloat()) {
                out.add(x);
            }
        }
        float[] f = new float[out.size()];
        for (int i = 0; i < f.length; i++) {
            f[i] = out.get(i);
        }
        return f;
    }
}
