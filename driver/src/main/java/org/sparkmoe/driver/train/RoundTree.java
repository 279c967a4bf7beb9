package org.sparkmoe.driver.train;

import org.apache.spark.HashPartitioner;
import org.apache.spark.api.java.JavaPairRDD;
import org.sparkmoe.train.TrainState;
import scala.Tuple2;

import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * Averages a round's partition states through a fixed binary tree over partition indices, in the shuffle: level
 * by level, nodes of span s/2 are keyed by (chunk, first partition / s) and each pair of siblings becomes their
 * {@link RoundNode#parent}, until one node per chunk covers all P partitions. Every mean has the same operands in
 * the same order whatever executors run the tasks and however they are scheduled, so the averaged state is the
 * same bits (a partition without a sibling at some level passes up unchanged). Each level moves the P partials
 * (float32, once the state) through the shuffle, never through task results. The root task of each chunk keeps
 * the mean where it is ({@link KeptMean}: a block of its executor, where the next round's tasks read it) and
 * returns only the metrics, so a round is one Spark job whose results are a few numbers per chunk; the driver reads
 * the kept chunks only when it needs the state.
 */
final class RoundTree {
    private RoundTree() {
    }

    /**
     * Averages the leaves and keeps the mean in {@code kept}'s blocks.
     *
     * @param leaves     (chunk, partition) → leaf node, every chunk of every partition
     * @param partitions P
     * @param chunks     C
     * @param kept       where the mean goes (its step is the leaves' step)
     * @return the round's metrics, {@link Round#state} null
     */
    static Round keep(JavaPairRDD<Long, RoundNode> leaves, int partitions, int chunks, KeptMean kept) {
        JavaPairRDD<Long, RoundNode> level = leaves;
        long span = 1;
        do {
            span *= 2;
            long s = span;
            long groups = (partitions + s - 1) / s;
            level = level
                    .mapToPair(t -> new Tuple2<>(t._2().mean.chunk() * groups + t._2().first / s, t._2()))
                    .reduceByKey(new HashPartitioner((int) Math.min(chunks * groups, Math.max(partitions, chunks))),
                            RoundNode::parent);
        } while (span < partitions);
        // the last level has one node per chunk c, key c, in partition c of C
        List<RoundNode> roots = level.values().map(root -> root.kept(kept)).collect();
        RoundNode[] top = new RoundNode[chunks];
        for (RoundNode node : roots) {
            int c = node.keptChunk;
            if (top[c] != null || node.first != 0 || node.count != partitions) {
                throw new IllegalStateException("averaging tree: chunk " + c + " came back covering partitions ["
                        + node.first + ", " + (node.first + node.count) + ") of " + partitions);
            }
            top[c] = node;
        }
        String[] nonFinite = new String[3];  // the first non-finite parameter, first moment, second moment
        for (int c = 0; c < chunks; c++) {
            if (top[c] == null) {
                throw new IllegalStateException("averaging tree: chunk " + c + " of " + chunks + " is missing");
            }
            for (int kind = 0; kind < 3; kind++) {
                if (nonFinite[kind] == null) {
                    nonFinite[kind] = top[c].nonFinite[kind];
                }
            }
        }
        String bad = nonFinite[0] != null ? nonFinite[0] : nonFinite[1] != null ? "m " + nonFinite[1]
                : nonFinite[2] != null ? "v " + nonFinite[2] : null;
        RoundNode metrics = top[0];
        return new Round(null, metrics.lossSum / metrics.steps, metrics.ceSum / metrics.steps,
                metrics.auxSum / metrics.steps, metrics.tokens, metrics.seconds, metrics.rssAnon, metrics.heapCommitted,
                bad);
    }

    /**
     * Averages the leaves and brings the mean to the driver ({@link #keep}, then read and dropped): the last round of
     * a run, whose state the driver writes.
     *
     * @param leaves     (chunk, partition) → leaf node, every chunk of every partition
     * @param partitions P
     * @param chunks     C
     * @return the round: averaged state and metrics
     */
    static Round average(JavaPairRDD<Long, RoundNode> leaves, int partitions, int chunks) {
        KeptMean kept = new KeptMean("last" + UUID.randomUUID().toString().replace("-", ""), -1, chunks);
        Round round = keep(leaves, partitions, chunks, kept);
        try {
            return round.withState(kept.fetch());
        } finally {
            kept.drop();
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
