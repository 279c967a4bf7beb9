package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerJobStart;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.train.TrainJob;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.train.TrainState;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Rounds on an embedded local master as one job per checkpoint interval whose tasks average among themselves: the
 * same bits as a job per round, with parameter and gradient averaging; every round given to the listener once, the
 * state readable after a job's last round only; a job cancelled while its tasks wait for each other ends the run.
 */
class LocalRoundsJobTest {
    private static String data;
    private static String out;
    private static JavaSparkContext sc;

    @BeforeAll
    static void start(@TempDir Path dir) throws Exception {
        data = Paths.qualify(Fixtures.sysadminExcerpt(dir).toString(), new Configuration());
        out = Paths.qualify(dir.resolve("out").toString(), new Configuration());   // not written: no outputs here
        sc = SparkContexts.start("local-rounds-job-test", "local[2]");
    }

    @AfterAll
    static void stop() {
        if (sc != null) {
            sc.close();
        }
    }

    /** {@code steps} steps of F on 2 partitions, a checkpoint every N rounds, w1 and w3 plus the routers. */
    private static TrainPlan plan(long steps, int f, int checkpointEvery, TrainPlan.Averaging averaging) {
        Configuration conf = new Configuration();
        TrainPlan flat = new TrainPlan(Paths.qualify(Fixtures.tinyModel().toString(), conf), List.of(data),
                TextSplit.TRAIN, 32, 2, steps, f, 2, out, checkpointEvery, false, List.of(Projection.GATE, Projection.UP), 4, 8,
                true, 1e-3, 2, 0.01, 0.05, null, 5);
        return new TrainPlan(flat.model(), flat.windows(), flat.rounds().withAveraging(averaging),
                flat.options().withPassWorkspace(true), flat.out(), false, flat.device());   // as train's plan gives
    }

    private static TrainState initial(TrainPlan plan) {
        try (ModelCache.Lease model = ModelCache.lease(plan.model())) {
            return TrainState.init(model.model(), plan.loraSpec(), plan.seed(), DataType.FLOAT);
        }
    }

    /** The run with a job per round (as on a cluster), then with local rounds: the same bits. */
    private static void sameBitsAsAJobPerRound(TrainPlan plan) {
        sc.sc().conf().set(SparkLimits.LOCAL_ROUNDS_KEY, "false");
        TrainState perRound;
        try {
            perRound = TrainJob.run(sc, plan, initial(plan), 0, (round, state) -> { });
        } finally {
            sc.sc().conf().remove(SparkLimits.LOCAL_ROUNDS_KEY);
        }
        List<String> jobs = new ArrayList<>();
        SparkListener descriptions = new SparkListener() {
            @Override
            public void onJobStart(SparkListenerJobStart job) {
                jobs.add(job.properties().getProperty("spark.job.description", ""));
            }
        };
        sc.sc().addSparkListener(descriptions);
        List<Long> reported = new ArrayList<>();
        TrainState local;
        try {
            local = TrainJob.run(sc, plan, initial(plan), 0, (round, state) -> {
                reported.add(round.round());
                if (round.round() % 2 == 1) {
                    assertEquals(round.step(), state.get().step(), "the state after a checkpoint's round");
                } else {
                    IllegalStateException e = assertThrows(IllegalStateException.class, state::get);
                    assertTrue(e.getMessage().contains("is not kept"), e.getMessage());
                }
                assertTrue(round.seconds() >= round.computeSeconds(), round.toJson());
            });
        } finally {
            sc.sc().removeSparkListener(descriptions);
        }
        TrainStates.assertSameBits(perRound, local);
        assertEquals(List.of(0L, 1L, 2L, 3L), reported, "every round given to the listener once, in order");
        assertEquals(List.of("train: rounds 1..2/4 (steps 1.." + 2 * plan.averagingFrequency() + " of "
                        + plan.steps() + ")", "train: rounds 3..4/4 (steps " + (2 * plan.averagingFrequency() + 1)
                        + ".." + plan.steps() + " of " + plan.steps() + ")"),
                jobs.stream().filter(d -> d.startsWith("train: round")).toList(), "a job per checkpoint interval");
    }

    @Test
    void parameterAveragingGivesTheBitsOfAJobPerRound() {
        sameBitsAsAJobPerRound(plan(8, 2, 2, TrainPlan.Averaging.PARAMETERS));
    }

    @Test
    void gradientAveragingGivesTheBitsOfAJobPerRound() {
        sameBitsAsAJobPerRound(plan(4, 1, 2, TrainPlan.Averaging.GRADIENTS));
    }

    /**
     * A job of rounds cancelled two seconds after it starts, while its tasks meet twice a round: the run throws, and
     * its tasks end within seconds (a round takes tens of milliseconds here), no task left waiting for the other.
     */
    @Test
    void aCancelledJobOfRoundsEndsTheRun() {
        TrainPlan plan = plan(400, 1, 400, TrainPlan.Averaging.GRADIENTS);
        AtomicBoolean cancelling = new AtomicBoolean();
        List<String> roundTaskEnds = java.util.Collections.synchronizedList(new ArrayList<>());
        java.util.concurrent.atomic.AtomicLong cancelledAt = new java.util.concurrent.atomic.AtomicLong();
        java.util.concurrent.atomic.AtomicLong lastEndAt = new java.util.concurrent.atomic.AtomicLong();
        java.util.Set<Integer> roundStages = java.util.concurrent.ConcurrentHashMap.newKeySet();
        SparkListener canceller = new SparkListener() {
            @Override
            public void onTaskEnd(SparkListenerTaskEnd task) {
                if (roundStages.contains(task.stageId())) {
                    roundTaskEnds.add(task.reason().getClass().getSimpleName());
                    lastEndAt.set(System.nanoTime());
                }
            }

            @Override
            public void onJobStart(SparkListenerJobStart job) {
                String description = job.properties().getProperty("spark.job.description", "");
                if (description.startsWith("train: rounds") && cancelling.compareAndSet(false, true)) {
                    job.stageIds().foreach(id -> roundStages.add((Integer) id));
                    Thread t = new Thread(() -> {
                        try {
                            Thread.sleep(2000);
                        } catch (InterruptedException e) {
                            return;
                        }
                        cancelledAt.set(System.nanoTime());
                        sc.cancelAllJobs();
                    });
                    t.setDaemon(true);
                    t.start();
                }
            }
        };
        TrainState start = initial(plan);
        sc.sc().addSparkListener(canceller);
        try {
            assertTimeoutPreemptively(Duration.ofSeconds(60), () -> assertThrows(Exception.class,
                    () -> TrainJob.run(sc, plan, start, 0, (round, state) -> { })));
            assertTrue(cancelling.get(), "the job was cancelled");
            long waited = System.nanoTime();
            while (roundTaskEnds.size() < 2 && System.nanoTime() - waited < 10_000_000_000L) {
                Thread.onSpinWait();
            }
        } finally {
            sc.sc().removeSparkListener(canceller);
            start.release();
        }
        // killed where they were (computing, or waiting for the other), not run on to the job's end (at the latest
        // LocalRounds.REPORT_NANOS, 10 s, after its start: 8 s after the cancel)
        assertEquals(List.of("TaskKilled", "TaskKilled"), List.copyOf(roundTaskEnds));
        double seconds = (lastEndAt.get() - cancelledAt.get()) / 1e9;
        assertTrue(seconds < 5, "the tasks ended " + seconds + " s after the cancel");
    }
}
