package org.sparkmoe.model;

import org.sparkmoe.kernels.Flat;

/**
 * Default RoPE as transformers builds it in float32: {@code inv_freq[i] = 1 / θ^(2i/rd)},
 * {@code angle = pos · inv_freq[i]}, applied as {@code q·cos + rotate_half(q)·sin} with the
 * two halves of the rotated part rotated together. The rotated part is the leading {@code rd} of the {@code hd}
 * entries of each head ({@code rd = int(hd · partial_rotary_factor)}, GLM-4.5; rd = hd for the others); the rest
 * passes through unchanged.
 */
public final class RotaryEmbedding {
    private final int headDim;
    private final int rotaryDim;
    private final float[] cos; // [P, rd/2]
    private final float[] sin; // [P, rd/2]
    private final int positions;

    /** RoPE over the whole head. */
    public RotaryEmbedding(int headDim, double theta, int positions) {
        this(headDim, headDim, theta, positions);
    }

    /** RoPE over the leading {@code rotaryDim} (even, ≤ headDim) entries of each head. */
    public RotaryEmbedding(int headDim, int rotaryDim, double theta, int positions) {
        if (rotaryDim < 2 || rotaryDim > headDim || rotaryDim % 2 != 0) {
            throw new IllegalArgumentException("rotary dimension must be even and in [2, head_dim " + headDim
                    + "], got " + rotaryDim);
        }
        this.headDim = headDim;
        this.rotaryDim = rotaryDim;
        this.positions = positions;
        int half = rotaryDim / 2;
        cos = new float[positions * half];
        sin = new float[positions * half];
        for (int i = 0; i < half; i++) {
            float exponent = (float) (2 * i) / rotaryDim;
            float invFreq = (float) (1.0 / (float) Math.pow(theta, exponent));
            for (int p = 0; p < positions; p++) {
                float angle = p * invFreq;
                cos[p * half + i] = (float) Math.cos(angle);
                sin[p * half + i] = (float) Math.sin(angle);
            }
        }
    }

    public int positions() {
        return positions;
    }

    /**
     * Copies one head vector from {@code src[srcAt..srcAt+hd)} to {@code dst[dstAt..)} rotated for position {@code pos}.
     */
    public void rotate(float[] src, int srcAt, float[] dst, int dstAt, int pos) {
        System.arraycopy(src, srcAt + rotaryDim, dst, dstAt + rotaryDim, headDim - rotaryDim);
        int half = rotaryDim / 2;
        int row = pos * half;
        for (int i = 0; i < half; i++) {
            float x1 = src[srcAt + i];
            float x2 = src[srcAt + half + i];
            float c = cos[row + i];
            float s = sin[row + i];
            dst[dstAt + i] = x1 * c + (-x2) * s;
            dst[dstAt + half + i] = x2 * c + x1 * s;
        }
    }

    /**
     * {@link #rotate(float[], int, float[], int, int)} on float64 values; when {@code single}, rounded to float32
     * where the float32 version rounds (bit-identical to it).
     */
    public void rotate(double[] src, int srcAt, double[] dst, int dstAt, int pos, boolean single) {
        System.arraycopy(src, srcAt + rotaryDim, dst, dstAt + rotaryDim, headDim - rotaryDim);
        int half = rotaryDim / 2;
        int row = pos * half;
        for (int i = 0; i < half; i++) {
            double x1 = src[srcAt + i];
            double x2 = src[srcAt + half + i];
            double c = cos[row + i];
            double s = sin[row + i];
            dst[dstAt + i] = Flat.round(Flat.round(x1 * c, single) + Flat.round(-x2 * s, single), single);
            dst[dstAt + half + i] = Flat.round(Flat.round(x2 * c, single) + Flat.round(x1 * s, single), single);
        }
    }

    /**
     * The mirror of {@link #rotate(double[], int, double[], int, int, boolean)}: the rotation is orthogonal, so the
     * gradient of the input is the upstream gradient rotated back by −angle: {@code dx1 = dy1·c + dy2·s},
     * {@code dx2 = −dy1·s + dy2·c}; the pass-through part's gradient is copied.
     */
    public void rotateBack(double[] dy, int dyAt, double[] dx, int dxAt, int pos) {
        System.arraycopy(dy, dyAt + rotaryDim, dx, dxAt + rotaryDim, headDim - rotaryDim);
        int half = rotaryDim / 2;
        int row = pos * half;
        for (int i = 0; i < half; i++) {
            double d1 = dy[dyAt + i];
            double d2 = dy[dyAt + half + i];
            double c = cos[row + i];
            double s = sin[row + i];
            dx[dxAt + i] = d1 * c + d2 * s;
            dx[dxAt + half + i] = -d1 * s + d2 * c;
        }
    }
}
