package org.sparkmoe.driver.train;

import org.apache.spark.BarrierTaskContext;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaRDD;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.kernels.StepWorkspace;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.train.TrainOptions;
import org.sparkmoe.train.TrainState;
import scala.collection.Iterator;
import scala.reflect.ClassTag$;
import scala.runtime.AbstractFunction1;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Phaser;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * A train run's rounds on an embedded local master whose tasks average among themselves: where the P partitions fit
 * the master's threads (local[N], P ≤ N), their partials the driver's share ({@link RoundTree#driverSpan} 1, a
 * round of one stage) and the steps run in the pass workspace (small steps: {@code MemoryPlan#passWorkspace}), the
 * rounds up to the next checkpoint run as one Spark job in barrier mode, whose P tasks (all
 * running at once, threads of this JVM) hand each round's leaves to the job's {@link Exchange} instead of returning
 * them. The first partition's task forms each chunk's mean over the same tree as {@link RoundTree} (the same bits as
 * the round's own job), takes gradient averaging's step, and hands the new state back; every task goes on from it.
 * So a round pays no Spark job (its launch, its closures, its results' return: about 60 ms of a tiny model's 0.4 s
 * round), only two hand-overs between threads.
 *
 * <p>The job ends after a round that is checkpointed, after the run's last round, at a round whose state is not
 * finite, or at the first round ending {@link #REPORT_NANOS} after the job began, so the driver's progress lines and
 * log (written when the job returns) stay that recent; the first task keeps the last state as a {@link KeptMean},
 * as a round's tree does. A task that fails breaks the exchange and the others stop at once; barrier mode ends the
 * attempt as a whole (and, with task retries allowed, runs the job again from its start: the same bits).
 */
final class LocalRounds {
    /** How long a job of rounds runs before it ends at a round's end, for the driver to report its rounds. */
    static final long REPORT_NANOS = TimeUnit.SECONDS.toNanos(10);

    private LocalRounds() {
    }

    /**
     * Whether {@code plan}'s rounds, whose partials are {@code partialBytes} each, run so: an embedded local master
     * with P or more threads, the partials within {@code driverBytes} together, the steps in the pass workspace, and
     * {@value SparkLimits#LOCAL_ROUNDS_KEY} not false. The workspace, because a step's fresh arrays (outside it)
     * give their native memory back only when the collector runs, and a job of rounds makes less heap garbage than a
     * job per round, so it runs less often: the demo's train, fresh arrays on one such job, peaked at 2.0–2.5 GB RSS
     * against 1.6 GB with a job per round (161 against 267 collections).
     */
    static boolean apply(SparkConf conf, TrainPlan plan, long partialBytes, long driverBytes) {
        return conf.getBoolean(SparkLimits.LOCAL_ROUNDS_KEY, true) && plan.options().passWorkspace()
                && SparkLimits.embeddedSlots(conf.get("spark.master", "")) >= plan.partitions()
                && RoundTree.driverSpan(plan.partitions(), partialBytes, driverBytes) == 1;
    }

    /**
     * A round the job ran.
     *
     * @param round its numbers ({@link RoundTree.Round#state} null)
     * @param nanos when the first task handed its new state back ({@link System#nanoTime} of this JVM)
     */
    record Ended(RoundTree.Round round, long nanos) {
    }

    /**
     * Runs rounds from {@code firstRound} (its state kept in {@code from}) up to {@code endRound} (exclusive) as one
     * job, or fewer ({@link LocalRounds}); the state after the run's last round read back.
     *
     * @param job   a name no other job of this JVM uses (the exchange's and the kept state's)
     * @param begin when the job's first round began on the driver ({@link System#nanoTime})
     */
    static TrainJob.Ran run(JavaRDD<WindowShard> shards, TrainPlan plan, KeptMean from, String job, long firstRound,
                            long endRound, long begin) {
        Task task = new Task(plan, from, job, firstRound, endRound, begin);
        Exchange done;
        try {
            shards.rdd().barrier().mapPartitions(task, false, ClassTag$.MODULE$.apply(Object.class)).count();
            done = Exchange.close(job);
        } catch (RuntimeException e) {
            Exchange.dropAll(job, e);
            throw e;
        }
        long now = System.nanoTime();
        List<Ended> ended = List.copyOf(done.ended);
        List<RoundTree.Round> rounds = new ArrayList<>(ended.size());
        double[] seconds = new double[ended.size()];
        long before = begin;
        for (int i = 0; i < seconds.length; i++) {
            long at = i + 1 == seconds.length ? now : ended.get(i).nanos();   // the last round: until the job returned
            seconds[i] = (at - before) / 1e9;
            before = at;
            rounds.add(ended.get(i).round());
        }
        if (firstRound + seconds.length < plan.roundCount()) {
            return new TrainJob.Ran(rounds, seconds, done.kept);
        }
        try {
            rounds.set(seconds.length - 1, rounds.get(seconds.length - 1).withState(done.kept.fetch()));
        } finally {
            done.kept.drop();
        }
        return new TrainJob.Ran(rounds, seconds, null);
    }

    /**
     * Where a job's P tasks meet between rounds (one per attempt of the job's stage): each task's leaves, then the
     * first task's new state for all; a failed task's error, which stops the others.
     */
    static final class Exchange {
        private static final Map<String, Exchange> OPEN = new ConcurrentHashMap<>();
        private static final long POLL_MILLIS = 20;

        private final String job;
        private final Phaser phaser;
        private final AtomicReferenceArray<List<RoundNode>> leaves;
        private volatile List<StateMean> next;
        private volatile boolean last;
        private volatile Throwable failure;
        /** The rounds done, added by the first task; read by the driver once the job has returned. */
        private final List<Ended> ended = Collections.synchronizedList(new ArrayList<>());
        private volatile KeptMean kept;

        private Exchange(String job, int partitions) {
            this.job = job;
            this.phaser = new Phaser(partitions);
            this.leaves = new AtomicReferenceArray<>(partitions);
        }

        static Exchange open(String job, int attempt, int partitions) {
            return OPEN.computeIfAbsent(job + "#" + attempt, key -> new Exchange(job, partitions));
        }

        /** On the driver after the job: its exchanges, one per attempt, forgotten. */
        private static List<Exchange> forget(String job) {
            List<Exchange> forgotten = new ArrayList<>();
            for (Map.Entry<String, Exchange> e : List.copyOf(OPEN.entrySet())) {
                if (e.getValue().job.equals(job)) {
                    OPEN.remove(e.getKey());
                    forgotten.add(e.getValue());
                }
            }
            return forgotten;
        }

        /** On the driver after the job: the attempt that kept its state (what a failed attempt kept dropped). */
        private static Exchange close(String job) {
            Exchange done = null;
            for (Exchange exchange : forget(job)) {
                if (exchange.kept != null && exchange.failure == null && done == null) {
                    done = exchange;
                } else if (exchange.kept != null) {
                    exchange.kept.drop();
                }
            }
            if (done == null || done.ended.isEmpty()) {
                throw new IllegalStateException("train: the job " + job + " of rounds returned without its state");
            }
            return done;
        }

        /** On the driver after a failed job: stops its tasks and drops any state they kept. */
        private static void dropAll(String job, RuntimeException failure) {
            for (Exchange exchange : forget(job)) {
                exchange.fail(failure);
                if (exchange.kept != null) {
                    try {
                        exchange.kept.drop();
                    } catch (RuntimeException dropFailure) {
                        failure.addSuppressed(dropFailure);
                    }
                }
            }
        }

        /** Stops the tasks waiting here: they throw (a task failed, or the job did). */
        void fail(Throwable t) {
            if (failure == null) {
                failure = t;
            }
            phaser.forceTermination();
        }

        /**
         * Waits until every task has arrived at this hand-over; throws when one failed or this task is killed (checked
         * on arriving, not only while waiting: tasks that keep pace never wait long).
         */
        private void meet(BarrierTaskContext context) {
            context.killTaskIfInterrupted();
            int phase = phaser.arrive();
            while (true) {
                try {
                    phaser.awaitAdvanceInterruptibly(phase, POLL_MILLIS, TimeUnit.MILLISECONDS);
                } catch (TimeoutException e) {
                    context.killTaskIfInterrupted();
                    continue;
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("train: a task of rounds " + job + " was interrupted", e);
                }
                if (failure != null || phaser.isTerminated()) {
                    throw new IllegalStateException("train: another task of rounds " + job + " failed: " + failure,
                            failure);
                }
                return;
            }
        }
    }

    /** One partition's task of the job: its rounds, and the first partition's averaging between them. */
    private static final class Task extends AbstractFunction1<Iterator<WindowShard>, Iterator<Object>>
            implements Serializable {
        private final TrainPlan plan;
        private final KeptMean from;
        private final String job;
        private final long firstRound;
        private final long endRound;
        private final long begin;

        Task(TrainPlan plan, KeptMean from, String job, long firstRound, long endRound, long begin) {
            this.plan = plan;
            this.from = from;
            this.job = job;
            this.firstRound = firstRound;
            this.endRound = endRound;
            this.begin = begin;
        }

        @Override
        public Iterator<Object> apply(Iterator<WindowShard> shards) {
            long start = System.nanoTime();
            BarrierTaskContext context = BarrierTaskContext.get();
            Exchange exchange = Exchange.open(job, context.stageAttemptNumber(), plan.partitions());
            boolean runOver = true;                  // the run's last round ran, or this attempt failed
            try {
                runOver = rounds(context, shards.next(), exchange, start);
            } catch (RuntimeException | Error e) {
                exchange.fail(e);
                throw e;
            } finally {
                if (runOver) {
                    StepWorkspace.releasePass();     // the thread's next task may not train (demo's later stages)
                }
            }
            return scala.collection.JavaConverters.asScalaIterator(Collections.emptyIterator());
        }

        /** @return whether the run's last round was this job's last */
        private boolean rounds(BarrierTaskContext context, WindowShard shard, Exchange exchange, long start) {
            boolean first = shard.partition == 0;
            TrainState state = null;
            try {
                state = from.fetch();
                List<StateMean> current = null;     // the first task's round start, as chunks (gradient averaging)
                if (first && plan.averagesGradients()) {
                    current = new ArrayList<>(from.chunks());
                    for (int c = 0; c < from.chunks(); c++) {
                        current.add(from.chunk(c));
                    }
                }
                for (long round = firstRound; ; round++) {
                    long stepBefore = state.step();
                    exchange.leaves.set(shard.partition, TrainJob.leaves(plan, state, shard, start));
                    exchange.meet(context);
                    if (first) {
                        average(exchange, round, stepBefore, current);
                    }
                    exchange.meet(context);
                    List<StateMean> next = exchange.next;
                    state.release();
                    state = null;
                    if (exchange.last) {
                        if (first) {
                            KeptMean kept = new KeptMean(job + "_" + context.stageAttemptNumber(),
                                    next.get(0).step(), next.size());
                            next.forEach(kept::put);
                            exchange.kept = kept;
                        }
                        return round + 1 == plan.roundCount();
                    }
                    start = System.nanoTime();
                    state = StateMean.join(next);
                    current = first && plan.averagesGradients() ? next : current;
                }
            } finally {
                if (state != null) {
                    state.release();
                }
            }
        }

        /**
         * The first task, between the hand-overs: each chunk's mean over the partitions' leaves (the tree of {@link
         * RoundTree#root}), with gradient averaging the step from {@code current} on it, handed back; the round's
         * numbers recorded; whether the job ends here.
         */
        private void average(Exchange exchange, long round, long stepBefore, List<StateMean> current) {
            int partitions = plan.partitions();
            int chunks = exchange.leaves.get(0).size();
            RoundNode[] roots = new RoundNode[chunks];
            for (int c = 0; c < chunks; c++) {
                List<RoundNode> nodes = new ArrayList<>(partitions);
                for (int p = 0; p < partitions; p++) {
                    nodes.add(exchange.leaves.get(p).get(c));
                }
                roots[c] = RoundTree.root(nodes, 1);
            }
            for (int p = 0; p < partitions; p++) {
                exchange.leaves.set(p, null);
            }
            List<StateMean> next = new ArrayList<>(chunks);
            String[][] perChunk = new String[chunks][];
            if (plan.averagesGradients()) {
                TrainOptions options = plan.options();
                double[][] squares = new double[chunks][];
                for (int c = 0; c < chunks; c++) {
                    squares[c] = roots[c].mean.squares();
                }
                double coef = RoundTree.GradientStep.clip(squares, options.maxGradNorm());
                double lr = options.schedule().at(stepBefore);
                for (int c = 0; c < chunks; c++) {
                    next.add(current.get(c).stepped(roots[c].mean, coef, lr, options.optimizer()));
                    perChunk[c] = next.get(c).firstNonFinite();
                }
            } else {
                for (int c = 0; c < chunks; c++) {
                    next.add(roots[c].mean);
                    perChunk[c] = roots[c].mean.firstNonFinite();
                }
            }
            RoundTree.Round numbers = RoundTree.metrics(roots[0], RoundTree.firstBad(perChunk));
            long now = System.nanoTime();
            exchange.ended.add(new Ended(numbers, now));
            exchange.next = next;
            exchange.last = round + 1 >= endRound || numbers.nonFinite() != null || !Double.isFinite(numbers.loss())
                    || now - begin >= REPORT_NANOS;
        }
    }
}
