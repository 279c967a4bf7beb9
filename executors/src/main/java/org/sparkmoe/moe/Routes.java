package org.sparkmoe.moe;

/** Softmax and top-K selection on float64 rows, shared by the trainable block and the load-balancing loss. */
final class Routes {
    private Routes() {
    }

    /** v[at .. at+n) ← softmax in place; see {@link org.sparkmoe.kernels.Softmax#row(double[], int, int, boolean)}. */
    static void softmax(double[] v, int at, int n, boolean single) {
        org.sparkmoe.kernels.Softmax.row(v, at, n, single);
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
