package org.sparkmoe.kernels;

/** Numerically stable float32 softmax over a row of a flat array, as torch.softmax(dtype=float32). */
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
}
