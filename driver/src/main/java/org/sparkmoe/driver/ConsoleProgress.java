package org.sparkmoe.driver;

import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerStageCompleted;
import org.apache.spark.scheduler.SparkListenerStageSubmitted;
import org.apache.spark.scheduler.SparkListenerTaskEnd;

import java.io.PrintStream;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/** Prints one line per finished task and stage on the console: "[stage 2] 3/8 tasks  (12.4 s)". */
final class ConsoleProgress extends SparkListener {
    private final PrintStream out;
    private final Map<Integer, Integer> totalTasks = new ConcurrentHashMap<>();
    private final Map<Integer, AtomicInteger> doneTasks = new ConcurrentHashMap<>();
    private final Map<Integer, Long> started = new ConcurrentHashMap<>();

    ConsoleProgress(PrintStream out) {
        this.out = out;
    }

    @Override
    public void onStageSubmitted(SparkListenerStageSubmitted event) {
        if (event.properties() != null
                && SchedulerWarmup.DESCRIPTION.equals(event.properties().getProperty("spark.job.description"))) {
            return;
        }
        int stage = event.stageInfo().stageId();
        totalTasks.put(stage, event.stageInfo().numTasks());
        doneTasks.put(stage, new AtomicInteger());
        started.put(stage, System.nanoTime());
        out.printf("[stage %d] %s: %d tasks%n", stage, event.stageInfo().name(), event.stageInfo().numTasks());
    }

    @Override
    public void onTaskEnd(SparkListenerTaskEnd event) {
        int stage = event.stageId();
        AtomicInteger done = doneTasks.get(stage);
        if (done != null && event.taskInfo().successful()) {
            out.printf("[stage %d] %d/%d tasks  (%.1f s)%n", stage, done.incrementAndGet(),
                    totalTasks.get(stage), seconds(stage));
        }
    }

    @Override
    public void onStageCompleted(SparkListenerStageCompleted event) {
        int stage = event.stageInfo().stageId();
        if (event.stageInfo().failureReason().isEmpty() && started.containsKey(stage)) {
            out.printf("[stage %d] done in %.1f s%n", stage, seconds(stage));
        }
    }

    private double seconds(int stage) {
        return (System.nanoTime() - started.get(stage)) / 1e9;
    }
}
