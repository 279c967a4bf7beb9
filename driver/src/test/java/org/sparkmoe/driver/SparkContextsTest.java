package org.sparkmoe.driver;

import org.apache.spark.JobExecutionStatus;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The settings every SparkMoE context gets, by where its executors run. */
class SparkContextsTest {
    private static final String WARMUP = ExecutorWarmupPlugin.class.getName();
    private static final String GPU = TaskGpuPlugin.class.getName();

    @Test
    void executorsInJvmsOfTheirOwnGetTheWarmupAndTheTasksGpuThroughPlugins() {
        for (String master : new String[] {"spark://host:7077", "yarn", "k8s://https://host:6443",
                "local-cluster[2,1,1024]"}) {
            SparkConf conf = SparkContexts.conf("test", master);
            assertEquals(WARMUP + "," + GPU, conf.get("spark.plugins"), master);
            assertFalse(conf.contains("spark.executor.killOnFatalError.depth"), master + ": executors die on an OOM");
        }
    }

    @Test
    void anEmbeddedDriverHasNoPluginAndKeepsItselfAliveOnATasksOom() {
        for (String master : new String[] {"local", "local[2]", "local[*]", "local[2,3]"}) {
            SparkConf conf = SparkContexts.conf("test", master);
            assertFalse(conf.contains("spark.plugins"), master);
            assertEquals("0", conf.get("spark.executor.killOnFatalError.depth"), master);
        }
    }

    /** A heap below Spark's 450 MiB minimum is refused in one line before Spark starts (and logs a stack trace). */
    @Test
    void aHeapBelowSparksMinimumIsRefusedInOneLine() {
        SparkConf conf = SparkContexts.conf("test", "local[2]");
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> SparkContexts.requireHeap(256L << 20, conf));
        assertEquals("the driver's heap is 256 MiB; Spark needs at least 450 MiB: raise -Xmx (SPARKMOE_JAVA_OPTS in "
                + "the embedded mode, --driver-memory with spark-submit)", e.getMessage());
        SparkContexts.requireHeap(450L << 20, conf);
        SparkContexts.requireHeap(256L << 20, conf.clone().set("spark.testing.memory", "536870912"));
    }

    /**
     * An embedded context runs the scheduler's warm-up job at once, beside the command's own; the console shows only
     * the command's stage.
     */
    @Test
    void anEmbeddedContextWarmsTheSchedulerUpWithAJobTheConsoleDoesNotShow() throws InterruptedException {
        PrintStream err = System.err;
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        int[] succeeded = new int[1];
        System.setErr(new PrintStream(printed, true, StandardCharsets.UTF_8));
        try (JavaSparkContext sc = SparkContexts.start("warmup-test", "local[2]")) {
            assertEquals(List.of(2, 3), sc.parallelize(List.of(1, 2), 2).map(x -> x + 1).collect());
            for (long deadline = System.nanoTime() + 60_000_000_000L; System.nanoTime() < deadline; Thread.sleep(50)) {
                int[] jobs = sc.statusTracker().getJobIdsForGroup(null);
                succeeded[0] = (int) Arrays.stream(jobs).mapToObj(id -> sc.statusTracker().getJobInfo(id))
                        .filter(job -> job != null && job.status() == JobExecutionStatus.SUCCEEDED).count();
                if (succeeded[0] == 2) {
                    break;
                }
            }
        } finally {
            System.setErr(err);
        }
        assertEquals(2, succeeded[0], "the command's job and the warm-up, both succeeded");
        String console = printed.toString(StandardCharsets.UTF_8);
        assertEquals(1, console.lines().filter(line -> line.matches("\\[stage \\d+\\] done in .*")).count(), console);
    }

    @Test
    void aUsersPluginsAreKeptAndOursAddedOnce() {
        System.setProperty("spark.plugins", "com.example.Metrics");
        try {
            assertEquals("com.example.Metrics," + WARMUP + "," + GPU,
                    SparkContexts.conf("test", "yarn").get("spark.plugins"));
            System.setProperty("spark.plugins", "com.example.Metrics, " + WARMUP);
            assertEquals("com.example.Metrics, " + WARMUP + "," + GPU,
                    SparkContexts.conf("test", "yarn").get("spark.plugins"));
            System.setProperty("spark.plugins", GPU + ", com.example.Metrics, " + WARMUP);
            assertEquals(GPU + ", com.example.Metrics, " + WARMUP,
                    SparkContexts.conf("test", "yarn").get("spark.plugins"));
        } finally {
            System.clearProperty("spark.plugins");
        }
        assertTrue(SparkContexts.embedded("local[4]"));
        assertFalse(SparkContexts.embedded("local-cluster[2,1,1024]"));
    }
}
