package org.sparkmoe.driver.train;

import org.apache.spark.HashPartitioner;
import org.apache.spark.api.java.JavaPairRDD;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.train.TrainState;
import scala.Tuple2;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;

/**
 * Averages a round's partition states through a fixed binary tree over partition indices, in the shuffle: level
 * by level, nodes of span s/2 are keyed by (chunk, first partition / s) and each pair of siblings becomes their
 * {@link RoundNode#parent}, until one node per chunk covers all P partitions. Every mean has the same operands in
 * the same order whatever executors run the tasks and however they are scheduled, so the averaged state is the
 * same bits (a partition without a sibling at some level passes up unchanged). Each level moves the P partials
 * (float32, once the state) through the shuffle, never through task results; the driver then fetches the C chunks
 * of the mean one job at a time, so no single result is larger than a chunk and {@code spark.driver.maxResultSize}
 * bounds only the chunk size.
 */
final class RoundTree {
    private RoundTree() {
    }

    /**
     * @param leaves     (chunk, partition) → leaf node, every chunk of every partition
     * @param partitions P
     * @param chunks     C
     * @return the round: averaged state and metrics
     */
    static Round average(JavaPairRDD<Long, RoundNode> leaves, int partitions, int chunks) {
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
        RoundNode[] top = new RoundNode[chunks];
        Iterator<RoundNode> fetched = level.values().toLocalIterator();
        while (fetched.hasNext()) {
            RoundNode node = fetched.next();
            int c = node.mean.chunk();
            if (top[c] != null || node.first != 0 || node.count != partitions) {
                throw new IllegalStateException("averaging tree: chunk " + c + " came back covering partitions ["
                        + node.first + ", " + (node.first + node.count) + ") of " + partitions);
            }
            top[c] = node;
        }
        List<StateMean> means = new ArrayList<>(chunks);
        for (int c = 0; c < chunks; c++) {
            if (top[c] == null) {
                throw new IllegalStateException("averaging tree: chunk " + c + " of " + chunks + " is missing");
            }
            means.add(top[c].mean);
        }
        RoundNode metrics = top[0];
        return new Round(StateMean.join(means), metrics.lossSum / metrics.steps, metrics.ceSum / metrics.steps,
                metrics.auxSum / metrics.steps, metrics.tokens, metrics.seconds, metrics.rssAnon, metrics.heapCommitted);
    }

    /**
     * @param state          the averaged state
     * @param loss           mean over partitions and steps of the training loss (CE + coef · aux)
     * @param ce             the same for the cross-entropy
     * @param aux            the same for the unweighted load-balancing loss
     * @param tokens         tokens forwarded by all partitions
     * @param computeSeconds the slowest partition's time in its local steps
     * @param rssAnon        the largest anonymous RSS of an executor JVM after its local steps; −1 unknown
     * @param heapCommitted  that JVM's committed heap then
     */
    record Round(TrainState state, double loss, double ce, double aux, long tokens, double computeSeconds,
                 long rssAnon, long heapCommitted) {
    }
}
