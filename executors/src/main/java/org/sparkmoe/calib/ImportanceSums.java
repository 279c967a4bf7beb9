package org.sparkmoe.calib;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.model.LinearInputs;

/**
 * The importance sums of every linear layer a calibration pass runs tokens through, per decoder layer, as llama.cpp's
 * imatrix collects them (exact and mergeable, {@link SquareSums}): one per {@link LinearInputs.Site} a forward pass
 * shows (attention, dense MLP, an MoE layer's router/shared-expert input and shared intermediate), and for an MoE
 * layer the routed experts' inputs [E, D] and intermediate activations [E, I] with per-expert row counts. Each sum is
 * created when its first rows arrive, so an aggregate holds only what its model has (and an empty one is small).
 */
public final class ImportanceSums implements java.io.Serializable {
    private static final int SITES = LinearInputs.Site.values().length;
    private static final int EXPERT_IN = SITES;
    private static final int EXPERT_INTER = SITES + 1;

    private final SquareSums[][] sums; // [decoder layers][sites, expert inputs, expert intermediates], null until used

    public ImportanceSums(int layers) {
        this.sums = new SquareSums[layers][SITES + 2];
    }

    public int layers() {
        return sums.length;
    }

    /** Where decoder layer {@code layer}'s forward shows its inputs (one matrix each). */
    public LinearInputs at(int layer) {
        return (site, rows) -> add(layer, site, rows);
    }

    /** Adds rows [T, width] of one site. */
    public void add(int layer, LinearInputs.Site site, INDArray rows) {
        int width = Math.toIntExact(rows.size(1));
        sum(layer, site.ordinal(), 1, width).add(0, rows.data().asFloat(),
                site + " of decoder layer " + layer);
    }

    /**
     * Adds expert e's rows of MoE decoder layer {@code layer}: its inputs x [n, D] (what gate and up read) and its
     * intermediate activations h [n, I] (what down reads), of a layer of {@code experts} experts.
     */
    public void addExpert(int layer, int experts, int e, float[] x, int hidden, float[] h, int intermediate) {
        sum(layer, EXPERT_IN, experts, hidden).add(e, x, "expert " + e + "'s input in decoder layer " + layer);
        sum(layer, EXPERT_INTER, experts, intermediate).add(e, h,
                "expert " + e + "'s intermediate activation in decoder layer " + layer);
    }

    private SquareSums sum(int layer, int kind, int matrices, int width) {
        SquareSums s = sums[layer][kind];
        if (s == null) {
            s = new SquareSums(matrices, width);
            sums[layer][kind] = s;
        }
        return s;
    }

    /** Decoder layer {@code layer}'s sums at {@code site}, or null when nothing was shown there. */
    public SquareSums site(int layer, LinearInputs.Site site) {
        return sums[layer][site.ordinal()];
    }

    /** MoE decoder layer {@code layer}'s routed experts' inputs [E, D], or null for a dense layer. */
    public SquareSums expertInputs(int layer) {
        return sums[layer][EXPERT_IN];
    }

    /** MoE decoder layer {@code layer}'s routed experts' intermediate activations [E, I], or null. */
    public SquareSums expertIntermediates(int layer) {
        return sums[layer][EXPERT_INTER];
    }

    /** this += other (exact, order-independent). */
    public ImportanceSums merge(ImportanceSums other) {
        if (other.sums.length != sums.length) {
            throw new IllegalArgumentException("merging importance sums of " + other.sums.length + " layers into "
                    + sums.length);
        }
        for (int l = 0; l < sums.length; l++) {
            for (int k = 0; k < sums[l].length; k++) {
                SquareSums theirs = other.sums[l][k];
                if (theirs == null) {
                    continue;
                }
                if (sums[l][k] == null) {
                    sums[l][k] = new SquareSums(theirs.matrices(), theirs.width());
                }
                sums[l][k].merge(theirs);
            }
        }
        return this;
    }

    public boolean sameAs(ImportanceSums other) {
        if (other.sums.length != sums.length) {
            return false;
        }
        for (int l = 0; l < sums.length; l++) {
            for (int k = 0; k < sums[l].length; k++) {
                SquareSums a = sums[l][k];
                SquareSums b = other.sums[l][k];
                if (a == null ? b != null : b == null || !a.sameAs(b)) {
                    return false;
                }
            }
        }
        return true;
    }
}
