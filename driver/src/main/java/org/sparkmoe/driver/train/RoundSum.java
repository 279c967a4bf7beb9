package org.sparkmoe.driver.train;

import org.sparkmoe.train.StateSum;
import org.sparkmoe.train.TrainState;

import java.io.Serializable;
import java.util.TreeMap;

/**
 * The treeAggregate aggregator of a round (add / merge, then {@link #finish}): partials travel up the tree keyed
 * by partition and are summed on the driver in partition order, so the averaged state is the same bits whatever
 * order tasks finish in and however many executors ran them (float sums are not associative). Serializable only
 * because Spark ships the empty zero value inside a closure; filled ones travel through Kryo.
 */
final class RoundSum implements Serializable {
    private static final long serialVersionUID = 1L;

    private TreeMap<Integer, RoundPartial> partials = new TreeMap<>();

    RoundSum add(RoundPartial partial) {
        if (partials.put(partial.partition, partial) != null) {
            throw new IllegalStateException("partition " + partial.partition + " reported twice in one round");
        }
        return this;
    }

    RoundSum merge(RoundSum other) {
        other.partials.values().forEach(this::add);
        return this;
    }

    /** The averaged state and the round's metrics; throws unless all {@code partitions} reported. */
    Round finish(int partitions) {
        if (partials.size() != partitions) {
            throw new IllegalStateException("a round got results from " + partials.size() + " of " + partitions
                    + " partitions");
        }
        StateSum sum = null;
        double loss = 0;
        double ce = 0;
        double aux = 0;
        long tokens = 0;
        double slowest = 0;
        int steps = 0;
        for (RoundPartial p : partials.values()) {
            sum = sum == null ? p.state : sum.merge(p.state);
            loss += p.lossSum;
            ce += p.ceSum;
            aux += p.auxSum;
            tokens += p.tokens;
            slowest = Math.max(slowest, p.seconds);
            steps += p.steps;
        }
        return new Round(sum.average(), loss / steps, ce / steps, aux / steps, tokens, slowest);
    }

    /**
     * @param state          the averaged state
     * @param loss           mean over partitions and steps of the training loss (CE + coef · aux)
     * @param ce             the same for the cross-entropy
     * @param aux            the same for the unweighted load-balancing loss
     * @param tokens         tokens forwarded by all partitions
     * @param computeSeconds the slowest partition's time in its local steps
     */
    record Round(TrainState state, double loss, double ce, double aux, long tokens, double computeSeconds) {
    }
}
