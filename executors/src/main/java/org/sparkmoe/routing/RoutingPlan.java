package org.sparkmoe.routing;

/**
 * The T·K (token, slot) pairs of a routing decision sorted by expert (stable: token order within an
 * expert), so that each expert's rows are one contiguous range for the grouped GEMM.
 */
public final class RoutingPlan {
    /** [T·K] pair index p = token·K + slot, in expert order. */
    public final int[] perm;
    /** [E+1] expert e owns plan rows offsets[e]..offsets[e+1]-1. */
    public final int[] offsets;
    /** [T·K] token of plan row i: perm[i] / K. */
    public final int[] tokenOfRow;
    /** [T·K] routing weight of plan row i. */
    public final float[] weightOfRow;
    public final int topK;

    private RoutingPlan(int[] perm, int[] offsets, int[] tokenOfRow, float[] weightOfRow, int topK) {
        this.perm = perm;
        this.offsets = offsets;
        this.tokenOfRow = tokenOfRow;
        this.weightOfRow = weightOfRow;
        this.topK = topK;
    }

    /**
     * @param experts [T·K] selected expert of pair token·K + slot
     * @param weights [T·K] its routing weight
     */
    public static RoutingPlan build(int[] experts, float[] weights, int numExperts, int topK) {
        int pairs = experts.length;
        int[] offsets = new int[numExperts + 1];
        for (int e : experts) {
            if (e < 0 || e >= numExperts) {
                throw new IllegalArgumentException("expert index " + e + " outside [0, " + numExperts + ")");
            }
            offsets[e + 1]++;
        }
        for (int e = 0; e < numExperts; e++) {
            offsets[e + 1] += offsets[e];
        }
        int[] cursor = offsets.clone();
        int[] perm = new int[pairs];
        int[] tokenOfRow = new int[pairs];
        float[] weightOfRow = new float[pairs];
        for (int p = 0; p < pairs; p++) {
            int row = cursor[experts[p]]++;
            perm[row] = p;
            tokenOfRow[row] = p / topK;
            weightOfRow[row] = weights[p];
        }
        return new RoutingPlan(perm, offsets, tokenOfRow, weightOfRow, topK);
    }

    public int rows() {
        return perm.length;
    }

    public int tokensOf(int expert) {
        return offsets[expert + 1] - offsets[expert];
    }
}
