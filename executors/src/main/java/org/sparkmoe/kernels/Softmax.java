package org.sparkmoe.kernels;

/** Numerically stable softmax over a row of a flat array, as torch.softmax in float32 (or float64). */
public final class Softmax {
    private Softmax() {
    }

    /** out[outAt .. outAt+n) = softmax(in[inAt .. inAt+n)). */
    public static void row(float[] in, int inAt, int n, float[] out, int outAt) {
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, in[inAt + i]);
        }
        float sum = 0f;
        for (int i = 0; i < n; i++) {
            float e = (float) Math.exp(in[inAt + i] - max);
            out[outAt + i] = e;
            sum += e;
        }
        for (int i = 0; i < n; i++) {
            out[outAt + i] /= sum;
        }
    }

    /**
     * v[at .. at+n) ← softmax(v[at .. at+n)) in place, in float64; when {@code single}, every operation is rounded
     * to float32 exactly where {@link #row(float[], int, int, float[], int)} rounds (bit-identical to it).
     */
    public static void row(double[] v, int at, int n, boolean single) {
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

    /**
     * The mirror of {@link #row(double[], int, int, boolean)}: given p = softmax(z) and dp, writes
     * dz = p ⊙ (dp − p·dp) into {@code dp[at .. at+n)}.
     *
     * @return p·dp over the n entries
     */
    public static double rowBackward(double[] p, double[] dp, int at, int n) {
        double dot = 0;
        for (int i = 0; i < n; i++) {
            dot += p[at + i] * dp[at + i];
        }
        for (int i = 0; i < n; i++) {
            dp[at + i] = p[at + i] * (dp[at + i] - dot);
        }
        return dot;
    }

    /**
     * log Σ exp(v[at .. at+n)) in float64, max-subtracted, from float32 values (a log-softmax's normaliser): e^x by
     * {@link Exp} and the sum in {@link VectorRows#sumExpShifted}'s fixed order, the same bits before and after the
     * vector kernels are compiled.
     *
     * @param scratch at least n values, overwritten
     */
    public static double logSumExp(float[] v, int at, int n, double[] scratch) {
        double max = VectorRows.max(v, at, n);
        return max + Math.log(VectorRows.sumExpShifted(v, at, n, max, scratch));
    }
}
