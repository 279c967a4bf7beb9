package org.sparkmoe.driver;

import org.apache.spark.api.java.JavaSparkContext;

import java.util.List;

/**
 * A Spark job of two tasks that do nothing, run in the background as soon as an embedded SparkContext starts. A
 * JVM's first job spends most of a second loading and interpreting Spark's scheduling path (the stage, the task
 * binary's broadcast, the first Kryo instances, the executor's task runner), which would otherwise delay the
 * command's first real job; this one pays it while the driver reads the checkpoint's config, tokenizes and plans.
 * A command whose tokens were ready before Spark (a small eval's: {@code TokenizeStage.startEarly}) submits its job
 * at once, and this one runs beside it (measured neutral there). {@link ConsoleProgress} does not show its stage.
 */
final class SchedulerWarmup {
    /** The job's description, by which {@link ConsoleProgress} knows its stage. */
    static final String DESCRIPTION = "sparkmoe: the scheduler's warm-up";

    private SchedulerWarmup() {
    }

    static void start(JavaSparkContext sc) {
        Thread thread = new Thread(() -> {
            try {
                sc.setJobDescription(DESCRIPTION);      // a local property of this thread only
                sc.parallelize(List.of(0, 1), 2).map(x -> x + 1).collect();
            } catch (Exception e) {
                // the command stopped the context first (Spark's SparkException: the job was cancelled), or it had
                // stopped before this thread ran (IllegalStateException): nothing left to warm
            }
        }, "sparkmoe-scheduler-warmup");
        thread.setDaemon(true);
        thread.start();
    }
}
