package org.sparkmoe.tests;

import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.text.TextSplit;

import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * eval on a real standalone cluster (Master, two Workers and two executors, all separate JVMs) gives the same
 * report as the embedded local[2] master, also when an executor JVM is killed in the middle of the job.
 */
class StandaloneClusterTest {
    private static final int WINDOW = 128;
    private static StandaloneCluster cluster;
    private static String localReport;

    private static EvalPlan plan(int partitions) {
        return new EvalPlan(Fixtures.tinyModel().toUri().toString(),
                List.of(Fixtures.corpus("sysadmin.txt").toUri().toString()), TextSplit.VALID, WINDOW, 2, 4, partitions);
    }

    @BeforeAll
    static void startClusterAndRunLocally() {
        try (JavaSparkContext sc = SparkContexts.start("standalone-test-local", "local[2]")) {
            localReport = EvalJob.run(sc, plan(2)).toJson();
        }
        cluster = StandaloneCluster.start(2, "1536m");
    }

    /** close() leaves no JVM of the cluster running. */
    @AfterAll
    static void stopCluster() {
        if (cluster != null) {
            List<ProcessHandle> processes = cluster.processes();
            cluster.close();
            assertEquals(List.of(), processes.stream().filter(ProcessHandle::isAlive).map(ProcessHandle::pid).toList());
        }
    }

    @Test
    void evalOnTwoExecutorJvmsEqualsLocal() {
        try (JavaSparkContext sc = new JavaSparkContext(cluster.conf("standalone-test-eval", "1g"))) {
            cluster.awaitExecutors(sc);
            Set<Long> taskJvms = new TreeSet<>(sc.parallelize(IntStream.range(0, 8).boxed().toList(), 8)
                    .map(i -> {
                        Thread.sleep(200); // long enough that one executor cannot take all eight
                        return ProcessHandle.current().pid();
                    }).collect());
            assertEquals(new TreeSet<>(cluster.executorPids()), taskJvms, "tasks ran in the executor JVMs");
            assertEquals(2, taskJvms.size());
            assertFalse(taskJvms.contains(ProcessHandle.current().pid()));
            assertEquals(localReport, EvalJob.run(sc, plan(2)).toJson());
        }
    }

    @Test
    void killedExecutorMidJobStillGivesTheLocalReport() throws Exception {
        try (JavaSparkContext sc = new JavaSparkContext(cluster.conf("standalone-test-kill", "1g"))) {
            cluster.awaitExecutors(sc);
            long before = cluster.executorPids(0).get(0);
            AtomicInteger finishedTasks = new AtomicInteger();
            sc.sc().addSparkListener(new SparkListener() {
                @Override
                public void onTaskEnd(SparkListenerTaskEnd taskEnd) {
                    finishedTasks.incrementAndGet();
                }
            });
            CompletableFuture<String> report = CompletableFuture.supplyAsync(() -> EvalJob.run(sc, plan(8)).toJson());
            long deadline = System.currentTimeMillis() + 120_000;
            while (finishedTasks.get() < 3 && !report.isDone() && System.currentTimeMillis() < deadline) {
                Thread.sleep(20); // tokenizing (1 task) and counting (1 task) are done: scoring has begun
            }
            assertFalse(report.isDone(), "the job finished before an executor could be killed");
            assertEquals(before, cluster.killExecutor(0));
            assertEquals(localReport.replace("\n", ""), report.get(300, TimeUnit.SECONDS).replace("\n", ""));
            List<Long> after = cluster.executorPids(0);
            assertTrue(after.isEmpty() || !after.contains(before), "the killed executor is gone: " + after);
            assertNotEquals(0, finishedTasks.get());
        }
    }
}
