package org.sparkmoe.driver.train;

import org.sparkmoe.train.StateMean;

/**
 * A node of a round's averaging tree: one chunk of the mean state of the partitions [first, first + count), and,
 * in chunk 0's nodes only, the sums of their step losses for the log (zeros in the other chunks' nodes). A root
 * whose chunk is kept on its executor ({@link #kept}) comes back to the driver without the chunk.
 */
final class RoundNode {
    int first;
    int count;
    StateMean mean;
    int steps;
    double lossSum;
    double ceSum;
    double auxSum;
    long tokens;
    /** The slowest partition's seconds in its local steps. */
    double seconds;
    /** The largest anonymous RSS of the partitions' JVMs after their local steps, bytes; −1 unknown. */
    long rssAnon = -1;
    /** The committed heap of the JVM whose {@link #rssAnon} this is, bytes. */
    long heapCommitted;
    /**
     * Set by the root once its mean is kept, and by a node parked for the driver ({@link #mean} then null): the chunk's
     * index; and, for the root, its first non-finite key among parameters, first and second moments ({@link
     * StateMean#firstNonFinite}).
     */
    int keptChunk = -1;
    String[] nonFinite;
    /** Set by a root of gradient averaging ({@link #keptGradient}): Σ x² of each tensor of its mean gradient. */
    double[] squares;

    /** For Kryo. */
    RoundNode() {
    }

    RoundNode(int partition, StateMean mean, int steps, double lossSum, double ceSum, double auxSum, long tokens,
              double seconds, long rssAnon, long heapCommitted) {
        this.first = partition;
        this.count = 1;
        this.mean = mean;
        this.steps = steps;
        this.lossSum = lossSum;
        this.ceSum = ceSum;
        this.auxSum = auxSum;
        this.tokens = tokens;
        this.seconds = seconds;
        this.rssAnon = rssAnon;
        this.heapCommitted = heapCommitted;
    }

    /** This root without its chunk, which {@code kept} now holds: what the driver gets back. */
    RoundNode kept(KeptMean kept) {
        kept.put(mean);
        keptChunk = mean.chunk();
        nonFinite = mean.firstNonFinite();
        mean = null;
        return this;
    }

    /**
     * Gradient averaging: this root without its chunk of the mean gradient, which {@code gradients} now holds until
     * the step, and with the chunk's {@link #squares} for the global norm.
     */
    RoundNode keptGradient(KeptMean gradients) {
        gradients.put(mean);
        keptChunk = mean.chunk();
        squares = mean.squares();
        mean = null;
        return this;
    }

    /** This node without its chunk, which {@code kept} now holds for the driver ({@link KeptMean#takePartial}). */
    RoundNode parked(KeptMean kept) {
        kept.putPartial(first, mean);
        keptChunk = mean.chunk();
        mean = null;
        return this;
    }

    /** On the driver: a {@link #parked} node with its chunk back. */
    RoundNode unparked(KeptMean kept) {
        mean = kept.takePartial(first, keptChunk);
        keptChunk = -1;
        return this;
    }

    /** The parent of two sibling nodes, given in either order: the left one (lower partitions) goes first. */
    static RoundNode parent(RoundNode a, RoundNode b) {
        RoundNode left = a.first < b.first ? a : b;
        RoundNode right = left == a ? b : a;
        if (left.first + left.count != right.first) {
            throw new IllegalStateException("averaging tree: partitions [" + left.first + ", "
                    + (left.first + left.count) + ") and [" + right.first + ", " + (right.first + right.count)
                    + ") are not siblings (a partition reported twice?)");
        }
        RoundNode p = new RoundNode();
        p.first = left.first;
        p.count = left.count + right.count;
        p.mean = left.mean.mean(right.mean);
        p.steps = left.steps + right.steps;
        p.lossSum = left.lossSum + right.lossSum;
        p.ceSum = left.ceSum + right.ceSum;
        p.auxSum = left.auxSum + right.auxSum;
        p.tokens = left.tokens + right.tokens;
        p.seconds = Math.max(left.seconds, right.seconds);
        RoundNode larger = left.rssAnon >= right.rssAnon ? left : right;
        p.rssAnon = larger.rssAnon;
        p.heapCommitted = larger.heapCommitted;
        return p;
    }
}
