package org.sparkmoe.driver.train;

import org.sparkmoe.io.FusedExperts;
import com.esotericsoftware.kryo.Kryo;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.spark.HashPartitioner;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.storage.StorageLevel;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.data.TokenizeStage;
import org.sparkmoe.driver.data.TokenizedFile;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.text.Windows;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.train.StepResult;
import org.sparkmoe.train.TrainOptions;
import org.sparkmoe.train.TrainState;
import org.sparkmoe.train.TrainStep;
import org.sparkmoe.train.WindowSampler;
import scala.Tuple2;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.UUID;
import java.util.function.Supplier;

/**
 * Data-parallel LoRA training with parameter (or gradient) averaging. Stage 1 tokenizes the files; their windows are
 * dealt to P partitions (window i to partition i mod P) and kept. Then, round after round, one Spark job: every
 * partition reads the round's starting state (LoRA, routers, AdamW moments, step) from the block its executor keeps
 * ({@link KeptMean}: from its own JVM's memory when that executor made the last mean, else fetched once) and takes
 * F optimiser steps on its own windows; their states, weighted by the windows each partition trained on, are
 * averaged in float32 through a fixed tree in the shuffle ({@link RoundTree}), whose root keeps the mean on its
 * executor for the next round and returns only the round's numbers. The driver reads the mean only when it writes
 * it (a checkpoint, the end of the run); when a kept mean is lost with its executor, the rounds since the last
 * state the driver holds are run again (the same bits). Only trainable tensors travel; each executor JVM loads the
 * base model once. With gradient averaging ({@link TrainPlan#averagesGradients}) each partition computes its batch's
 * gradients at the round's state instead, the tree averages them and one AdamW step is taken on their mean ({@link
 * RoundTree.GradientStep}). On an embedded local master the rounds up to each checkpoint run as one job whose tasks
 * average among themselves ({@link LocalRounds}): the same bits, without a job per round.
 */
public final class TrainJob {
    private TrainJob() {
    }

    /** Called on the driver after every round. */
    public interface RoundListener {
        /**
         * @param state the averaged state, read from the executors on the first call (a checkpoint's round);
         *              freed once a later round's state is read, so listeners must not keep it
         */
        void roundDone(RoundLog log, Supplier<TrainState> state);
    }

    /**
     * The state before the first round, built on the driver from config.json and the few checkpoint tensors it
     * starts from (see {@link TrainState#init(ModelConfig, TensorSource, org.sparkmoe.train.LoraSpec, long)}); the
     * model itself is loaded only by the executors.
     */
    public static TrainState initialState(TrainPlan plan, Configuration conf) {
        Path dir = new Path(plan.model());
        ModelConfig config = ModelFolder.readConfig(dir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            return TrainState.init(config, FusedExperts.perExpert(checkpoint, config), plan.loraSpec(), plan.seed());
        }
    }

    /**
     * Runs rounds {@code firstRound} .. rounds−1 from {@code state} (the initial state, or a checkpoint's). The states
     * the listener reads are freed once a later one is read; the caller's initial state is left alone.
     *
     * @return the state after the last round
     */
    public static TrainState run(JavaSparkContext sc, TrainPlan plan, TrainState state, long firstRound,
                                 RoundListener listener) {
        JavaRDD<WindowShard> shards = shard(sc, plan);
        String run = UUID.randomUUID().toString().replace("-", "");
        long bytesRead = state.bytes();     // the starting state, read by each round's tasks
        // each partition's float32 partial, averaged in RoundTree: its state, or its gradients (a third)
        long partialBytes = plan.averagesGradients() ? state.bytes() / 3 : state.bytes();
        long bytesReturned = plan.partitions() * partialBytes;
        long driverBytes = SparkLimits.driverAveragingSetting(sc.getConf());
        boolean local = LocalRounds.apply(sc.getConf(), plan, partialBytes, driverBytes);
        if (local) {
            System.err.println("train: embedded local master: the rounds up to each checkpoint run as one Spark job ("
                    + (plan.partitions() == 1 ? "1 task" : plan.partitions() + " tasks averaging among themselves")
                    + "; " + SparkLimits.LOCAL_ROUNDS_KEY + "=false: a job per round)");
        }
        int chunks = StateMean.chunkKeys(state, StateMean.CHUNK_BYTES).size();
        Held held = new Held(state, firstRound);
        TrainState last = state;
        int reruns = 0;
        int jobs = 0;
        KeptMean start = KeptMean.put(run, state);
        boolean startIsDrivers = true;  // start was put from the driver's own state, not kept by a round's tasks
        long step = state.step();
        try {
            long round = firstRound;
            long reported = firstRound;   // rounds before this one were given to the listener (before a rerun)
            while (round < plan.roundCount()) {
                long begin = System.nanoTime();
                long end = local ? Math.min(plan.roundCount(), (round / plan.checkpointEvery() + 1)
                        * plan.checkpointEvery()) : round + 1;
                long stepAfter = Math.min(plan.steps(), step + (end - round) * plan.averagingFrequency());
                sc.setJobDescription("train: round" + (end - round > 1 ? "s " + (round + 1) + ".." + end : " "
                        + (round + 1)) + "/" + plan.roundCount() + " (steps " + (step + 1) + ".." + stepAfter
                        + " of " + plan.steps() + ")");
                KeptMean from = start;
                Ran ran;
                try {
                    ran = local
                            ? LocalRounds.run(shards, plan, from, run + "_" + reruns + "_" + jobs++, round, end, begin)
                            : round(shards, plan, from, run + "_" + reruns, step, chunks, partialBytes, driverBytes,
                            round + 1 == plan.roundCount(), begin);
                } catch (Exception e) {
                    boolean partialLost = KeptMean.Lost.partialCaused(e);
                    if (!partialLost && (!KeptMean.Lost.caused(e) || startIsDrivers)) {
                        throw e;    // not a lost mean, or the driver's own state was unreadable: no rerun helps
                    }
                    start.drop();
                    reruns++;
                    System.err.printf("train: round %d/%d: the state of step %d was lost with its executor; running "
                                    + "rounds %d..%d again from the driver's state of step %d%n", round + 1,
                            plan.roundCount(), step, held.round + 1, round + 1, held.state.step());
                    start = KeptMean.put(run + "_" + reruns, held.state);
                    startIsDrivers = true;
                    step = held.state.step();
                    round = held.round;
                    continue;
                }
                start.drop();       // its tasks have read it
                start = ran.kept();
                startIsDrivers = false;
                for (int i = 0; i < ran.rounds().size(); i++) {
                    RoundTree.Round done = ran.rounds().get(i);
                    long stepBefore = step;
                    step = Math.min(plan.steps(), step + plan.averagingFrequency());
                    if (done.nonFinite() != null || !Double.isFinite(done.loss())) {
                        requireFinite(plan, round, stepBefore, step, done);
                    }
                    boolean lastOfJob = i + 1 == ran.rounds().size();
                    if (done.state() != null) {
                        last = done.state();
                    }
                    long thisRound = round;
                    KeptMean kept = start;
                    Supplier<TrainState> mean = done.state() != null ? done::state : lastOfJob
                            ? () -> held.read(kept, thisRound + 1) : () -> {
                        throw new IllegalStateException("train: the state after round " + (thisRound + 1)
                                + " is not kept (its job of rounds keeps its last round's)");
                    };
                    if (round >= reported) {
                        TrainOptions options = plan.options();
                        listener.roundDone(new RoundLog(round, step, done.loss(), done.ce(), done.aux(),
                                options.schedule().at(step - 1), done.tokens(), ran.seconds()[i],
                                done.computeSeconds(), plan.partitions(), bytesRead, bytesReturned, done.rssAnon(),
                                done.heapCommitted()), mean);
                        reported = round + 1;
                    }
                    round++;
                }
            }
        } finally {
            if (start != null) {
                start.drop();
            }
            shards.unpersist(false);
            held.releaseUnless(last, state);
        }
        return last;
    }

    /**
     * What a job of rounds did: one round's ({@link #round}) or several ({@link LocalRounds#run}).
     *
     * @param rounds  its rounds, in order (at least one); the run's last round with its state
     * @param seconds each round's wall time on the driver (the job's, shared out at the rounds' ends)
     * @param kept    the state after its last round; null after the run's last round
     */
    record Ran(List<RoundTree.Round> rounds, double[] seconds, KeptMean kept) {
    }

    /** One round as its own Spark job: the partitions' local steps, then the averaging tree ({@link RoundTree}). */
    private static Ran round(JavaRDD<WindowShard> shards, TrainPlan plan, KeptMean from, String name, long step,
                             int chunks, long partialBytes, long driverBytes, boolean lastRound, long begin) {
        long stepAfter = Math.min(plan.steps(), step + plan.averagingFrequency());
        KeptMean next = new KeptMean(name, stepAfter, chunks);
        RoundTree.GradientStep gradientStep = plan.averagesGradients()
                ? new RoundTree.GradientStep(from, new KeptMean(name + "_gradients", step, chunks),
                plan.options().maxGradNorm(), plan.options().schedule().at(step), plan.options().optimizer()) : null;
        JavaPairRDD<Long, RoundNode> leaves = shards.flatMapToPair(shard -> localSteps(plan, from, shard).iterator());
        RoundTree.Round done;
        try {
            done = lastRound
                    ? RoundTree.average(leaves, plan.partitions(), chunks, partialBytes, driverBytes, gradientStep)
                    : RoundTree.keep(leaves, plan.partitions(), chunks, partialBytes, driverBytes, next, gradientStep);
        } catch (RuntimeException e) {
            next.drop();
            if (gradientStep != null) {
                gradientStep.gradients().drop();
            }
            KeptMean.dropPartials(next, e);
            throw e;
        }
        return new Ran(List.of(done), new double[] {(System.nanoTime() - begin) / 1e9}, lastRound ? null : next);
    }

    /**
     * The newest state the driver holds and the first round to run from it: the caller's, then each mean the
     * listener reads (the previous one freed then). Rounds rerun from it when a kept mean is lost.
     */
    private static final class Held {
        TrainState state;
        long round;
        private final TrainState callers;

        Held(TrainState callers, long round) {
            this.state = callers;
            this.round = round;
            this.callers = callers;
        }

        /** Reads {@code kept}, the mean before round {@code nextRound}, once; the same state on later calls. */
        TrainState read(KeptMean kept, long nextRound) {
            if (round != nextRound) {
                TrainState fetched = kept.fetch();
                releaseUnless(null, callers);
                state = fetched;
                round = nextRound;
            }
            return state;
        }

        void releaseUnless(TrainState keep, TrainState callers) {
            if (state != keep && state != callers) {
                state.release();
            }
        }
    }

    /**
     * Stops the run at the first round whose loss or averaged state is not finite: the state is not checkpointed
     * and no adapter is written, so the latest checkpoint in --out stays the last good one.
     */
    private static void requireFinite(TrainPlan plan, long round, long stepBefore, long stepAfter,
                                      RoundTree.Round done) {
        String bad = Double.isFinite(done.loss()) ? done.nonFinite() : "the loss (" + done.loss() + ")";
        throw new IllegalArgumentException("train stopped at round " + (round + 1) + "/" + plan.roundCount()
                + " (steps " + (stepBefore + 1) + ".." + stepAfter + "): " + bad + " is not finite; "
                + "expected finite numbers (NaN or infinite weights in model " + plan.model() + "? a too high --lr?)"
                + "; wrote no adapter and no checkpoint of this round (those of earlier rounds are kept)");
    }

    /** The classes a train job sends through Spark (Kryo registration is required). */
    public static void registerClasses(Kryo kryo) {
        kryo.register(WindowShard.class);
        kryo.register(RoundNode.class);
        kryo.register(StateMean.class);
        kryo.register(float[][].class);
        kryo.register(long[][].class);
        kryo.register(String[].class);
        kryo.register(TrainState.class);
        kryo.register(LinkedHashMap.class);
        kryo.register(long[].class);
        kryo.register(DataType.class);
    }

    /** Stage 1: tokenize, cut windows, deal window i to partition i mod P, keep. */
    private static JavaRDD<WindowShard> shard(JavaSparkContext sc, TrainPlan plan) {
        TokenizeStage.Tokenized tokenized = TokenizeStage.run(sc, "train", plan.model(), plan.data(), plan.split(),
                plan.window());
        long[] windowsPerFile = tokenized.windowCounts(plan.window());
        long[] firstWindow = new long[windowsPerFile.length];
        long total = 0;
        for (int f = 0; f < windowsPerFile.length; f++) {
            firstWindow[f] = total;
            total += windowsPerFile[f];
        }
        if (total < plan.partitions()) {
            tokenized.files().unpersist(false);
            throw new IllegalArgumentException("the " + plan.split() + " split of the training data has " + total
                    + " windows of " + plan.window() + " tokens, fewer than the " + plan.partitions()
                    + " partitions: use fewer --partitions or a shorter --window");
        }
        int window = plan.window();
        sc.setJobDescription("train: deal " + total + " windows of " + window + " tokens to " + plan.partitions()
                + " partitions");
        JavaRDD<WindowShard> shards = tokenized.files()
                .flatMapToPair((TokenizedFile file) -> {
                    int[][] windows = Windows.cut(file.tokens, window);
                    List<Tuple2<Long, int[]>> out = new ArrayList<>(windows.length);
                    for (int i = 0; i < windows.length; i++) {
                        out.add(new Tuple2<>(firstWindow[file.file] + i, windows[i]));
                    }
                    return out.iterator();
                })
                .repartitionAndSortWithinPartitions(new HashPartitioner(plan.partitions())) // key i → i mod P
                .mapPartitionsWithIndex(TrainJob::toShard, true)
                .persist(StorageLevel.MEMORY_AND_DISK_SER());
        shards.count();
        tokenized.files().unpersist(false);
        return shards;
    }

    private static Iterator<WindowShard> toShard(int partition, Iterator<Tuple2<Long, int[]>> windows) {
        List<int[]> list = new ArrayList<>();
        windows.forEachRemaining(w -> list.add(w._2()));
        return List.of(new WindowShard(partition, list.toArray(new int[0][]))).iterator();
    }

    /**
     * One partition's F local steps from the kept starting state (read as new tensors), or with gradient averaging
     * its batch's gradients at that state: the leaves of the averaging tree, one per chunk of the state, keyed
     * (chunk, partition).
     */
    private static List<Tuple2<Long, RoundNode>> localSteps(TrainPlan plan, KeptMean start, WindowShard shard) {
        long begin = System.nanoTime();
        TrainState state = start.fetch();
        List<RoundNode> leaves = leaves(plan, state, shard, begin);
        state.release();        // the chunks hold its values now
        List<Tuple2<Long, RoundNode>> keyed = new ArrayList<>(leaves.size());
        for (RoundNode leaf : leaves) {
            keyed.add(new Tuple2<>((long) shard.partition, leaf));
        }
        return keyed;
    }

    /**
     * One partition's round from {@code state}: F local steps on it (in place), or with gradient averaging its
     * batch's gradients at it; the state is left to the caller. The leaves of the averaging tree, one per chunk of
     * the state, chunk 0's with the round's numbers (its seconds counted from {@code begin}).
     */
    static List<RoundNode> leaves(TrainPlan plan, TrainState state, WindowShard shard, long begin) {
        TrainOptions options = plan.options();
        WindowSampler sampler = new WindowSampler(plan.seed(), shard.partition, shard.windows.length);
        int steps = (int) Math.min(plan.averagingFrequency(), plan.steps() - state.step());
        double loss = 0;
        double ce = 0;
        double aux = 0;
        long tokens = 0;
        List<StateMean> partial = null;
        try (ModelCache.Lease model = ModelCache.lease(plan.model(), plan.device())) {
            for (int s = 0; s < steps; s++) {
                int[] picked = sampler.batch(state.step(), plan.batchWindows());
                int[][] batch = new int[picked.length][];
                for (int b = 0; b < picked.length; b++) {
                    batch[b] = shard.windows[picked[b]];
                }
                if (plan.averagesGradients()) {        // one step (F = 1), taken on the mean after the tree
                    TrainStep.Evaluation e = TrainStep.evaluate(model.model(), state, batch, options);
                    partial = StateMean.splitGradients(state, e.grads(), plan.batchWindows(), StateMean.CHUNK_BYTES);
                    e.grads().values().forEach(TrainStep::free);
                    loss += e.loss();
                    ce += e.ce();
                    aux += e.aux();
                    tokens += e.tokens();
                    continue;
                }
                StepResult r = TrainStep.run(model.model(), state, batch, options);
                loss += r.loss();
                ce += r.ceLoss();
                aux += r.auxLoss();
                tokens += r.tokens();
            }
        }
        double seconds = (System.nanoTime() - begin) / 1e9;
        if (partial == null) {
            partial = StateMean.split(state, (long) steps * plan.batchWindows(), StateMean.CHUNK_BYTES);
        }
        List<RoundNode> leaves = new ArrayList<>(partial.size());
        for (StateMean chunk : partial) {
            leaves.add(chunk.chunk() == 0
                    ? new RoundNode(shard.partition, chunk, steps, loss, ce, aux, tokens, seconds,
                    ProcessMemory.rssAnonBytes(), ProcessMemory.heapCommittedBytes())
                    : new RoundNode(shard.partition, chunk, 0, 0, 0, 0, 0, 0, -1, 0));
        }
        return leaves;
    }
}
