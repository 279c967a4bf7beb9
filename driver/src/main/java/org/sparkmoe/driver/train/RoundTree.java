package org.sparkmoe.driver.train;

import org.apache.spark.HashPartitioner;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.train.AdamW;
import org.sparkmoe.train.GradClip;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.train.TrainState;
import scala.Tuple2;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.UUID;
import java.util.stream.IntStream;

/**
 * Averages a round's partition states through a fixed binary tree over partition indices: level by level, nodes of
 * span s/2 are keyed by (chunk, first partition / s) and each pair of siblings becomes their {@link
 * RoundNode#parent}, until one node per chunk covers all P partitions. Every mean has the same operands in the same
 * order whatever executors run the tasks, however they are scheduled and wherever a level is computed, so the
 * averaged state is the same bits (a partition without a sibling at some level passes up unchanged).
 *
 * <p>The levels run in the shuffle while a level's nodes are more bytes than the driver may read ({@link
 * #driverSpan}). The nodes of the first level that fits stay blocks of their executors ({@link
 * RoundNode#parked}), the driver reads them (from its own memory in embedded mode: no copy, no serialization),
 * computes the levels above and keeps the mean in its own block manager, where the next round's tasks read it.
 * Small states (a LoRA of a small model: every partition's partial within spark.sparkmoe.train.driverAveraging)
 * so make a round one stage, with no shuffle. Otherwise the root task of each chunk keeps the mean where it is
 * ({@link KeptMean}: a block of its executor) and returns only the metrics. Either way a round is one Spark job
 * whose task results are a few numbers per chunk, and the driver reads a mean kept on an executor only when it needs
 * the state.
 *
 * <p>Gradient averaging ({@link GradientStep}): the leaves are the partitions' gradients (a third of a state's
 * bytes), averaged by the same tree; each root keeps its chunk of the mean gradient and returns its squares, the
 * driver forms the global norm's clip factor, and each chunk of the round's state takes one AdamW step with its chunk
 * of the mean gradient (on the driver when it formed the roots, else in a second job of one task per chunk) and is
 * kept as the next state.
 */
public final class RoundTree {
    private RoundTree() {
    }

    /**
     * The span of the tree's level the driver averages from: 1 when the P partials (each {@code stateBytes}) fit in
     * {@code driverBytes} together, doubling while a level's ⌈P / span⌉ nodes do not; P or more when no level below
     * the root fits, and then the executors form the mean and keep it.
     */
    public static long driverSpan(int partitions, long stateBytes, long driverBytes) {
        long span = 1;
        while (span < partitions && (partitions + span - 1) / span * stateBytes > driverBytes) {
            span *= 2;
        }
        return span;
    }

    /**
     * Averages the leaves and keeps the mean in {@code kept}'s blocks.
     *
     * @param leaves      (chunk, partition) → leaf node, every chunk of every partition
     * @param partitions  P
     * @param chunks      C
     * @param stateBytes  bytes of one partition's partial (all its chunks)
     * @param driverBytes the partials' bytes the driver may take at once ({@link #driverSpan})
     * @param kept        where the mean goes (its step is the leaves' step), or with {@code step} the stepped state
     * @param step        gradient averaging's step; null for parameter averaging
     * @return the round's metrics, {@link Round#state} null
     */
    static Round keep(JavaPairRDD<Long, RoundNode> leaves, int partitions, int chunks, long stateBytes,
                      long driverBytes, KeptMean kept, GradientStep step) {
        long driverSpan = driverSpan(partitions, stateBytes, driverBytes);
        JavaPairRDD<Long, RoundNode> level = leaves;
        long span = 1;
        while (span < Math.min(driverSpan, partitions)) {
            span *= 2;
            long s = span;
            long groups = (partitions + s - 1) / s;
            level = level
                    .mapToPair(t -> new Tuple2<>(t._2().mean.chunk() * groups + t._2().first / s, t._2()))
                    .reduceByKey(new HashPartitioner((int) Math.min(chunks * groups, Math.max(partitions, chunks))),
                            RoundNode::parent);
        }
        List<RoundNode> roots;
        if (span >= partitions) {
            roots = level.values().map(root -> keptRoot(root, kept, step)).collect();  // one node per chunk: the root
        } else {
            roots = new ArrayList<>(chunks);
            // each node's chunk stays a block of its executor (no task result, no serialization in embedded mode)
            List<RoundNode> nodes = new ArrayList<>(level.values().map(node -> node.parked(kept)).collect());
            nodes.replaceAll(node -> node.unparked(kept));
            nodes.sort(Comparator.<RoundNode>comparingInt(n -> n.mean.chunk()).thenComparingInt(n -> n.first));
            for (int from = 0; from < nodes.size(); ) {
                int to = from;
                while (to < nodes.size() && nodes.get(to).mean.chunk() == nodes.get(from).mean.chunk()) {
                    to++;
                }
                roots.add(keptRoot(root(nodes.subList(from, to), span), kept, step));
                from = to;
            }
        }
        RoundNode[] top = new RoundNode[chunks];
        for (RoundNode node : roots) {
            int c = node.keptChunk;
            if (top[c] != null || node.first != 0 || node.count != partitions) {
                throw new IllegalStateException("averaging tree: chunk " + c + " came back covering partitions ["
                        + node.first + ", " + (node.first + node.count) + ") of " + partitions);
            }
            top[c] = node;
        }
        for (int c = 0; c < chunks; c++) {
            if (top[c] == null) {
                throw new IllegalStateException("averaging tree: chunk " + c + " of " + chunks + " is missing");
            }
        }
        String[][] perChunk = new String[chunks][];
        if (step == null) {
            for (int c = 0; c < chunks; c++) {
                perChunk[c] = top[c].nonFinite;
            }
        } else {
            perChunk = step.take(leaves.context(), top, kept, span >= partitions);
        }
        return metrics(top[0], firstBad(perChunk));
    }

    /**
     * The first non-finite tensor of a round's new state, from each chunk's first non-finite parameter, first and
     * second moment ({@link StateMean#firstNonFinite}, in chunk order): a parameter before a moment; null when all
     * are finite.
     */
    static String firstBad(String[][] perChunk) {
        String[] nonFinite = new String[3];  // the first non-finite parameter, first moment, second moment
        for (String[] chunk : perChunk) {
            for (int kind = 0; kind < 3; kind++) {
                if (nonFinite[kind] == null) {
                    nonFinite[kind] = chunk[kind];
                }
            }
        }
        return nonFinite[0] != null ? nonFinite[0] : nonFinite[1] != null ? "m " + nonFinite[1]
                : nonFinite[2] != null ? "v " + nonFinite[2] : null;
    }

    /** A round's numbers from chunk 0's root (the sums over all partitions), its state not attached. */
    static Round metrics(RoundNode root, String nonFinite) {
        return new Round(null, root.lossSum / root.steps, root.ceSum / root.steps, root.auxSum / root.steps,
                root.tokens, root.seconds, root.rssAnon, root.heapCommitted, nonFinite);
    }

    /** A chunk's root with its mean kept: the state's in {@code kept}, or with {@code step} the mean gradient's. */
    private static RoundNode keptRoot(RoundNode root, KeptMean kept, GradientStep step) {
        return step == null ? root.kept(kept) : root.keptGradient(step.gradients());
    }

    /**
     * The levels above {@code span} on the driver (or a task of {@link LocalRounds}): one chunk's nodes of that span,
     * in partition order, to their root.
     */
    static RoundNode root(List<RoundNode> nodes, long span) {
        List<RoundNode> level = nodes;
        for (long s = span * 2; level.size() > 1; s *= 2) {
            List<RoundNode> up = new ArrayList<>((level.size() + 1) / 2);
            for (int i = 0; i < level.size(); i++) {
                RoundNode node = level.get(i);
                boolean sibling = i + 1 < level.size() && level.get(i + 1).first / s == node.first / s;
                up.add(sibling ? RoundNode.parent(node, level.get(++i)) : node);
            }
            level = up;
        }
        return level.get(0);
    }

    /**
     * Averages the leaves and brings the mean to the driver ({@link #keep}, then read and dropped): the last round of
     * a run, whose state the driver writes.
     *
     * @param leaves      (chunk, partition) → leaf node, every chunk of every partition
     * @param partitions  P
     * @param chunks      C
     * @param stateBytes  bytes of one partition's partial
     * @param driverBytes the partials' bytes the driver may take at once
     * @param step        gradient averaging's step; null for parameter averaging
     * @return the round: averaged (or stepped) state and metrics
     */
    static Round average(JavaPairRDD<Long, RoundNode> leaves, int partitions, int chunks, long stateBytes,
                         long driverBytes, GradientStep step) {
        KeptMean kept = new KeptMean("last" + UUID.randomUUID().toString().replace("-", ""), -1, chunks);
        Round round;
        try {
            round = keep(leaves, partitions, chunks, stateBytes, driverBytes, kept, step);
        } catch (RuntimeException e) {
            KeptMean.dropPartials(kept, e);
            kept.drop();
            throw e;
        }
        try {
            return round.withState(kept.fetch());
        } finally {
            kept.drop();
        }
    }

    /**
     * Gradient averaging's step of a round: the round's starting state, where the mean gradient's chunks wait between
     * the tree and the step, and the step's clip and learning rate.
     *
     * @param start       the round's starting state (its tasks computed the gradients at it)
     * @param gradients   where the roots keep the mean gradient's chunks (dropped once the step is taken)
     * @param maxGradNorm the global gradient-norm clip
     * @param lr          the learning rate of the step from the start's step
     */
    record GradientStep(KeptMean start, KeptMean gradients, double maxGradNorm, double lr, AdamW adamW)
            implements Serializable {

        /**
         * The clip factor of the mean gradient's global norm (the roots' squares in chunk order: tensor order), then
         * each chunk of the start stepped with its chunk of the mean gradient and kept in {@code kept}: on the
         * driver, or on the executors in a job of one task per chunk.
         *
         * @return each chunk's first non-finite parameter, first and second moment ({@link StateMean#firstNonFinite})
         */
        String[][] take(SparkContext sc, RoundNode[] roots, KeptMean kept, boolean onExecutors) {
            double coef = clip(Arrays.stream(roots).map(root -> root.squares).toArray(double[][]::new), maxGradNorm);
            try {
                if (!onExecutors) {
                    String[][] out = new String[roots.length][];
                    for (int c = 0; c < roots.length; c++) {
                        out[c] = keptStep(c, coef, kept);
                    }
                    return out;
                }
                List<Integer> chunks = IntStream.range(0, roots.length).boxed().toList();
                return JavaSparkContext.fromSparkContext(sc).parallelize(chunks, chunks.size())
                        .map(c -> keptStep(c, coef, kept)).collect().toArray(new String[0][]);
            } finally {
                gradients.drop();
            }
        }

        /**
         * The clip factor of a mean gradient's global norm from each chunk's Σ x² per tensor, in chunk order (tensor
         * order).
         */
        static double clip(double[][] squaresPerChunk, double maxGradNorm) {
            double[] squares = Arrays.stream(squaresPerChunk).flatMapToDouble(Arrays::stream).toArray();
            return GradClip.coefficient(GradClip.total(squares), maxGradNorm);
        }

        private String[] keptStep(int chunk, double coef, KeptMean kept) {
            StateMean next = start.chunk(chunk).stepped(gradients.roundChunk(chunk), coef, lr, adamW);
            kept.put(next);
            return next.firstNonFinite();
        }
    }

    /**
     * @param state          the averaged state when brought to the driver ({@link #average}); null when kept
     * @param loss           mean over partitions and steps of the training loss (CE + coef · aux)
     * @param ce             the same for the cross-entropy
     * @param aux            the same for the unweighted load-balancing loss
     * @param tokens         tokens forwarded by all partitions
     * @param computeSeconds the slowest partition's time in its local steps
     * @param rssAnon        the largest anonymous RSS of an executor JVM after its local steps; −1 unknown
     * @param heapCommitted  that JVM's committed heap then
     * @param nonFinite      the first tensor of the mean holding a NaN or an infinity (as {@link
     *                       TrainState#firstNonFinite} names it), or null
     */
    record Round(TrainState state, double loss, double ce, double aux, long tokens, double computeSeconds,
                 long rssAnon, long heapCommitted, String nonFinite) {
        Round withState(TrainState averaged) {
            return new Round(averaged, loss, ce, aux, tokens, computeSeconds, rssAnon, heapCommitted, nonFinite);
        }
    }
}
