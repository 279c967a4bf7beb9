package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.scheduler.AccumulableInfo;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerJobStart;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.calib.CalibrateJob;
import org.sparkmoe.driver.calib.CalibratePlan;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.layerwise.LayerwisePass;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.text.TextSplit;
import scala.collection.JavaConverters;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeoutException;
import java.util.function.Supplier;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * eval --layerwise and calibrate --layerwise with checkpoints on a real standalone cluster (a Master, two Workers and
 * their two executors, all separate JVMs): the tiny Mixtral's 4 layers, checkpointed after every second layer. When
 * layer 2's first job starts, layer 1's checkpoint is written (an RDD's checkpoint is written before the action that
 * computed it returns) and the executor JVM that computed some of layer 1's chunks is killed, losing its share of the
 * persisted hidden states. The pass resumes from layer 1's checkpoint: no task that ends after the kill computed a
 * chunk of the embedding or of layers 0 and 1 (the pass's per-step accumulators, read from the tasks' ends), and the
 * result is the local[2] whole-model run's bit for bit: eval's report (G = 1) and calibrate's statistics with two
 * expert groups. Without checkpoints the same kill sends the lost chunks through the embedding and every layer
 * again, which this test would see. Surefire runs it (a test, not an IT): like {@link StandaloneClusterTest} it
 * needs the test classpath only, not the assembly.
 */
class LayerwiseClusterTest {
    private static final int WINDOW = 32;
    private static final int BATCH = 2;
    private static final int PARTITIONS = 4;
    /** Checkpoints after layers 1 and 3 of the tiny Mixtral's 4 (0-based). */
    private static final int CHECKPOINT_EVERY = 2;
    /** The last checkpointed layer when the executor dies: it dies as layer 2 starts, not checkpointed itself. */
    private static final int CHECKPOINTED = 1;
    private static StandaloneCluster cluster;
    private static JavaSparkContext sc;
    private static List<String> data;
    private static ModelConfig config;
    private static String localReport;
    private static CalibrateJob.Result localCalibration;

    private static EvalPlan eval() {
        return new EvalPlan(Fixtures.tinyModel().toUri().toString(), data, TextSplit.VALID, WINDOW, 2, BATCH,
                PARTITIONS);
    }

    private static CalibratePlan calibration() {
        return new CalibratePlan(Fixtures.tinyModel().toUri().toString(), data, TextSplit.VALID, WINDOW, 0, 2, BATCH,
                PARTITIONS, false, null);
    }

    /** The whole-model results on local[2], then the cluster and one application on it for both tests. */
    @BeforeAll
    static void runTheWholeModelLocallyThenStartTheCluster(@TempDir Path dir) throws Exception {
        data = List.of(Fixtures.sysadminExcerpt(dir).toUri().toString());
        config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(Fixtures.tinyModel().toUri()),
                new Configuration());
        assertEquals(4, config.num_hidden_layers);
        try (JavaSparkContext sc = SparkContexts.start("layerwise-cluster-test-local", "local[2]")) {
            localReport = EvalJob.run(sc, eval()).toJson();
            localCalibration = CalibrateJob.run(sc, calibration(), config);
        }
        cluster = StandaloneCluster.start(2, "1536m");
        sc = new JavaSparkContext(cluster.conf("layerwise-cluster-test", "1g"));
    }

    /** close() leaves no JVM of the cluster running. */
    @AfterAll
    static void stopCluster() {
        if (sc != null) {
            sc.stop();
        }
        if (cluster != null) {
            List<ProcessHandle> processes = cluster.processes();
            cluster.close();
            assertEquals(List.of(), processes.stream().filter(ProcessHandle::isAlive).map(ProcessHandle::pid).toList());
        }
    }

    @Test
    void evalResumesFromTheLastCheckpointWhenAnExecutorDies(@TempDir Path dir) {
        LayerwisePlan pass = new LayerwisePlan(1, dir.toUri().toString(), CHECKPOINT_EVERY);
        assertEquals(localReport, killedMidPass("eval", dir, () -> EvalJob.runLayerwise(sc, eval(), pass).toJson()));
    }

    /** With expert groups (G = 2): each MoE layer's output is the zip of its attention half and its groups' rows. */
    @Test
    void calibrateWithExpertGroupsResumesFromTheLastCheckpointWhenAnExecutorDies(@TempDir Path dir) {
        LayerwisePlan pass = new LayerwisePlan(2, dir.toUri().toString(), CHECKPOINT_EVERY);
        CalibrateJob.Result result = killedMidPass("calibrate", dir,
                () -> CalibrateJob.runLayerwise(sc, calibration(), config, pass, false));
        assertTrue(localCalibration.stats().sameAs(result.stats()), "the whole model's statistics");
        assertArrayEquals(localCalibration.windowsPerFile(), result.windowsPerFile());
    }

    /**
     * Runs {@code job}'s layer-sequential pass, checkpointing into {@code checkpoints}, with an executor killed as
     * layer 2 starts, and asserts that layer 1's checkpoint was on disk then, that no chunk of the embedding or of
     * layers 0 and 1 was computed after the kill, and that some of layer 2's were; returns the result.
     */
    private static <T> T killedMidPass(String job, Path checkpoints, Supplier<T> run) {
        cluster.awaitExecutors(sc); // after an earlier test's kill, the Worker's new executor
        KillAfterCheckpoint kill = new KillAfterCheckpoint(job + " --layerwise: ", checkpoints);
        sc.sc().addSparkListener(kill);
        T result;
        try {
            result = run.get();
            sc.sc().listenerBus().waitUntilEmpty(60_000); // the listener has seen every task of the pass end
        } catch (TimeoutException e) {
            throw new IllegalStateException("Spark's listener bus did not drain in 60 s", e);
        } finally {
            sc.sc().removeSparkListener(kill);
        }
        assertNull(kill.failure, () -> "killing the executor failed: " + kill.failure);
        assertNotNull(kill.killed, job + ": no executor was killed");
        assertEquals(PARTITIONS, kill.checkpointFilesAtTheKill, "part files of layer " + CHECKPOINTED
                + "'s checkpoint when the executor was killed");
        Map<String, Long> after = kill.computedAfterTheKill();
        System.err.println(job + " --layerwise: executor " + kill.killed + " killed as " + layer(CHECKPOINTED + 1)
                + " started; chunks computed after: " + after);
        for (String step : List.of("embedding", layer(0), layer(CHECKPOINTED))) {
            assertEquals(0L, after.getOrDefault(step, 0L), job + ": chunks of " + step + " were computed again after "
                    + "executor " + kill.killed + " died, not read from layer " + CHECKPOINTED + "'s checkpoint: "
                    + after);
        }
        assertTrue(after.getOrDefault(layer(CHECKPOINTED + 1), 0L) > 0,
                job + ": the pass had passed layer " + (CHECKPOINTED + 1) + " when the executor died: " + after);
        return result;
    }

    /** A pass's step name for layer {@code l}, as in its job descriptions and accumulators. */
    private static String layer(int l) {
        return "layer " + l + " of " + config.num_hidden_layers;
    }

    /**
     * Kills, when the first job of layer {@link #CHECKPOINTED} + 1 starts, the executor JVM that ran the first task to
     * compute chunks of layer {@link #CHECKPOINTED} (so it holds some of that layer's persisted output), counts the
     * checkpoint's part files then, and adds up per step the chunks that the tasks ending after the kill computed (the
     * pass's "STEP: chunks computed" accumulators; a failed task reports none). Listener events arrive in order on one thread, so every task end
     * seen after the kill ended after the next layer's job began.
     */
    private static final class KillAfterCheckpoint extends SparkListener {
        private final String pass;
        private final Path checkpoints;
        private final Map<String, Long> after = new TreeMap<>();
        private String computedCheckpointedLayer;
        private volatile String killed;
        private volatile long checkpointFilesAtTheKill;
        private volatile RuntimeException failure;

        KillAfterCheckpoint(String pass, Path checkpoints) {
            this.pass = pass;
            this.checkpoints = checkpoints;
        }

        @Override
        public void onJobStart(SparkListenerJobStart start) {
            String description = start.properties().getProperty("spark.job.description");
            if (killed != null || description == null || !description.startsWith(pass + layer(CHECKPOINTED + 1))) {
                return;
            }
            try {
                if (computedCheckpointedLayer == null) {
                    throw new IllegalStateException("no task computed chunks of " + layer(CHECKPOINTED));
                }
                cluster.killExecutor(cluster.workerOf(computedCheckpointedLayer));
                killed = computedCheckpointedLayer;
                try (Stream<Path> files = Files.walk(checkpoints)) { // layer 3's are written after this job
                    checkpointFilesAtTheKill = files.filter(f -> f.getFileName().toString().startsWith("part-"))
                            .count();
                }
            } catch (IOException e) {
                failure = new UncheckedIOException(e);
            } catch (RuntimeException e) {
                failure = e;
            }
        }

        @Override
        public void onTaskEnd(SparkListenerTaskEnd end) {
            String suffix = ": " + LayerwisePass.CHUNKS_COMPUTED;
            for (AccumulableInfo a : JavaConverters.seqAsJavaList(end.taskInfo().accumulables())) {
                String name = a.name().isDefined() ? a.name().get() : "";
                if (!name.startsWith(pass) || !name.endsWith(suffix) || a.update().isEmpty()) {
                    continue;
                }
                String step = name.substring(pass.length(), name.length() - suffix.length());
                if (killed != null) {
                    synchronized (after) {
                        after.merge(step, ((Number) a.update().get()).longValue(), Long::sum);
                    }
                } else if (step.equals(layer(CHECKPOINTED)) && computedCheckpointedLayer == null) {
                    computedCheckpointedLayer = end.taskInfo().executorId();
                }
            }
        }

        Map<String, Long> computedAfterTheKill() {
            synchronized (after) {
                return new TreeMap<>(after);
            }
        }
    }
}
