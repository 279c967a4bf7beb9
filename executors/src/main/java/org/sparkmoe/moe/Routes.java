package org.sparkmoe.moe;

import org.sparkmoe.kernels.Flat;

/** Softmax and top-K selection on float64 rows, shared by the trainable block and the load-balancing loss. */
final class Routes {
    private Routes() {
    }

    /**
     * v[at .. at+n) ← softmax(v[at .. at+n)) in place, max-subtracted. When {@code single}, every operation is
     * rounded to float32 exactly where {@link org.sparkmoe.kernels.Softmax#row} rounds (bit-identical to it).
     */
    static void softmax(double[] v, int at, int n, boolean single) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, v[at + i]);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) {
            double e = Flat.round(Math.exp(Flat.round(v[at + i] - max, single)), single);
            v[at + i] = e;
            sum = Flat.round(sum + e, single);
        }
        for (int i = 0; i < n; i++) {
            v[at + i] = Flat.round(v[at + i] / sum, single);
        }
    }

    /** The index in [0, n) of the largest v[at + i] not yet taken; ties go to the lower index. */
    static int argmaxNotTaken(double[] v, int at, int n, boolean[] taken) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            if (!taken[i] && (best < 0 || v[at + i] > v[at + best])) {
                best = i;
            }
        }
        return best;
    }
}
