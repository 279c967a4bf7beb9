package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.SparkEnv;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.cuda.TaskGpu;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.ExecutorWarmupPlugin;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.train.TrainJob;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.train.TrainState;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

/**
 * train on a real standalone cluster (Master, two Workers, two executor JVMs): the averaged state equals the
 * local[2] run with the same partitioning bit for bit, averaged on the driver or on the executors, also when an
 * executor JVM is killed in the middle of a round.
 */
class TrainClusterTest {
    private static StandaloneCluster cluster;
    private static TrainPlan plan;
    private static TrainState local;

    /** 4 rounds of 2 steps on 2 partitions, w1 and w3 plus the routers, on the first 40,000 characters of sysadmin. */
    @BeforeAll
    static void trainLocallyThenStartCluster(@TempDir Path dir) throws Exception {
        Path data = Fixtures.sysadminExcerpt(dir);
        Configuration conf = new Configuration();
        plan = new TrainPlan(Paths.qualify(Fixtures.tinyModel().toString(), conf),
                List.of(Paths.qualify(data.toString(), conf)), TextSplit.TRAIN, 32, 2, 8, 2, 2,
                Paths.qualify(dir.resolve("out").toString(), conf), 1, false, List.of(Projection.GATE, Projection.UP),
                4, 8, true, 1e-3, 2, 0.01, 1.0, null, 7);
        try (JavaSparkContext sc = SparkContexts.start("train-cluster-test-local", "local[2]")) {
            local = train(sc, (round, state) -> { });
        }
        cluster = StandaloneCluster.startWithPretendGpus(2, "1536m");
    }

    @AfterAll
    static void stopCluster() {
        if (cluster != null) {
            cluster.close();
        }
    }

    private static TrainState train(JavaSparkContext sc, TrainJob.RoundListener listener) {
        TrainState start;
        try (ModelCache.Lease model = ModelCache.lease(plan.model())) {
            start = TrainState.init(model.model(), plan.loraSpec(), plan.seed(), DataType.FLOAT);
        }
        return TrainJob.run(sc, plan, start, 0, listener);
    }

    /** The small state is averaged on the driver (the default): the partials read from the executors' JVMs. */
    @Test
    void twoExecutorJvmsEqualLocal() {
        try (JavaSparkContext sc = new JavaSparkContext(cluster.conf("train-cluster-test", "1g"))) {
            cluster.awaitExecutors(sc);
            TrainStates.assertSameBits(local, train(sc, (round, state) -> { }));
            List<Boolean> warmed = sc.parallelize(List.of(0, 1), 2).map(i -> ExecutorWarmupPlugin.initialised())
                    .collect();
            assertEquals(List.of(true, true), warmed, "the warm-up plugin started in the executor JVMs");
            assertFalse(ExecutorWarmupPlugin.initialised(), "the driver is no executor");
        }
    }

    /**
     * With GPU scheduling (one GPU per executor and per task, as conf/'s GPU block sets it) each task's thread knows
     * the GPU Spark gave it, through {@code TaskGpuPlugin}: the Workers offer addresses 1 and 2, so the CUDA code
     * would compute on, and the model cache keep a model per, the task's GPU, not device 0.
     */
    @Test
    void eachTaskKnowsTheGpuSparkGaveIt() {
        try (JavaSparkContext sc = new JavaSparkContext(cluster.conf("train-cluster-test-gpu", "1g")
                .set("spark.executor.resource.gpu.amount", "1").set("spark.task.resource.gpu.amount", "1"))) {
            cluster.awaitExecutors(sc);
            List<String> seen = sc.parallelize(IntStream.range(0, 8).boxed().toList(), 8).map(i -> {
                Thread.sleep(200); // long enough that one executor cannot take all eight
                return SparkEnv.get().executorId() + " " + TaskContext.get().resources().get("gpu").get().addresses()[0]
                        + " " + TaskGpu.ordinal() + " " + Device.CUDA.cacheTag();
            }).collect();
            Set<Integer> gpus = new TreeSet<>();
            for (String task : seen) {
                String[] f = task.split(" ");
                int expected = cluster.workerOf(f[0]) + 1;
                assertEquals(expected + " " + expected + " cuda:" + expected, f[1] + " " + f[2] + " " + f[3], task);
                gpus.add(expected);
            }
            assertEquals(Set.of(1, 2), gpus, "both executors ran tasks: " + seen);
        }
        assertEquals(0, TaskGpu.ordinal(), "the driver's thread has no task GPU");
    }

    /**
     * Averaged on the executors (spark.sparkmoe.train.driverAveraging 0: the shuffle's tree, the mean kept by an
     * executor): the killed executor's kept mean, when it held it, is recomputed from the driver's last state.
     */
    @Test
    void anExecutorKilledMidRoundChangesNothing() throws Exception {
        try (JavaSparkContext sc = new JavaSparkContext(cluster.conf("train-cluster-test-kill", "1g")
                .set(SparkLimits.DRIVER_AVERAGING_KEY, "0"))) {
            cluster.awaitExecutors(sc);
            long victim = cluster.executorPids(0).get(0);
            AtomicLong roundsDone = new AtomicLong();
            AtomicInteger tasksAfterRound = new AtomicInteger();
            sc.sc().addSparkListener(new SparkListener() {
                @Override
                public void onTaskEnd(SparkListenerTaskEnd taskEnd) {
                    if (roundsDone.get() >= 1) {
                        tasksAfterRound.incrementAndGet();
                    }
                }
            });
            CompletableFuture<TrainState> result = CompletableFuture.supplyAsync(
                    () -> train(sc, (round, state) -> roundsDone.incrementAndGet()));
            long deadline = System.currentTimeMillis() + 180_000;
            while (roundsDone.get() < 1 && !result.isDone() && System.currentTimeMillis() < deadline) {
                Thread.sleep(10); // kill once round 2 has started: its tasks are running
            }
            assertFalse(result.isDone(), "training finished before an executor could be killed");
            assertEquals(victim, cluster.killExecutor(0));
            TrainStates.assertSameBits(local, result.get(300, TimeUnit.SECONDS));
            assertFalse(cluster.executorPids(0).contains(victim), "the killed executor is gone");
            assertNotEquals(0, tasksAfterRound.get());
        }
    }
}
