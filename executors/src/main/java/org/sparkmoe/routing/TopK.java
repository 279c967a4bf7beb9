package org.sparkmoe.routing;

/** Top-K selection in a row of a flat array: the K largest in descending order, ties to the lower index. */
public final class TopK {
    private TopK() {
    }

    /**
     * Writes the indices (relative to {@code at}) of the K largest of v[at .. at+n) to out[outAt .. outAt+K), in
     * descending order; an index whose {@code allowed} entry is false is never chosen ({@code allowed} null: all).
     */
    public static void select(double[] v, int at, int n, int k, boolean[] allowed, int[] out, int outAt) {
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int i = 0; i < n; i++) {
                if ((allowed == null || allowed[i]) && !taken(out, outAt, j, i)
                        && (best < 0 || v[at + i] > v[at + best])) {
                    best = i;
                }
            }
            if (best < 0) {
                throw new IllegalArgumentException("top-" + k + " needs " + k + " candidates, found " + j);
            }
            out[outAt + j] = best;
        }
    }

    /** Which of v[at .. at+n) are among its K largest (ties to the lower index). */
    public static boolean[] members(double[] v, int at, int n, int k) {
        int[] chosen = new int[k];
        select(v, at, n, k, null, chosen, 0);
        boolean[] member = new boolean[n];
        for (int i : chosen) {
            member[i] = true;
        }
        return member;
    }

    private static boolean taken(int[] out, int outAt, int filled, int i) {
        for (int j = 0; j < filled; j++) {
            if (out[outAt + j] == i) {
                return true;
            }
        }
        return false;
    }
}
