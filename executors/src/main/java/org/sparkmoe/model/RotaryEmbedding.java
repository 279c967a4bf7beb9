package org.sparkmoe.model;

import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.YarnScaling;
import org.sparkmoe.kernels.Flat;

/**
 * RoPE as transformers builds it in float32: {@code angle = pos · inv_freq[i]}, applied as
 * {@code q·cos + rotate_half(q)·sin}. The rotated part is the leading {@code rd} of the {@code hd} entries of each
 * head ({@code rd = int(hd · partial_rotary_factor)}, GLM-4.5; rd = hd for the others); the rest passes through
 * unchanged. The inverse frequencies are the default {@code inv_freq[i] = 1 / θ^(2i/rd)} or YaRN's
 * ({@code _compute_yarn_parameters}: a ramp between the extrapolated θ^(-2i/rd) and the interpolated θ^(-2i/rd)/s
 * over the correction range), and YaRN scales cos and sin by its attention factor. Pair i of the rotated part is
 * (x[i], x[i + rd/2]) (rotate_half), or with {@code interleaved} (DeepSeek's layout) (x[2i], x[2i+1]), written back
 * to the same two places. transformers' DeepSeek-V3 writes the interleaved pairs' results de-interleaved instead;
 * q and k are permuted alike, so their dot products are equal.
 */
public final class RotaryEmbedding {
    private final int headDim;
    private final int rotaryDim;
    private final float[] cos; // [P, rd/2]
    private final float[] sin; // [P, rd/2]
    private final int positions;
    private final boolean interleaved;

    /** The tables a model of {@code config} uses (head_dim, its rotary part, rope_theta, positions, YaRN, MLA pairs). */
    public static RotaryEmbedding of(ModelConfig config) {
        return new RotaryEmbedding(config.head_dim, config.rotaryDim(), config.rope_theta,
                config.max_position_embeddings, config.rope_scaling, config.mla != null && config.mla.rope_interleave());
    }

    /** Default RoPE over the whole head. */
    public RotaryEmbedding(int headDim, double theta, int positions) {
        this(headDim, headDim, theta, positions, null, false);
    }

    /** Default RoPE over the leading {@code rotaryDim} entries of each head. */
    public RotaryEmbedding(int headDim, int rotaryDim, double theta, int positions) {
        this(headDim, rotaryDim, theta, positions, null, false);
    }

    /** RoPE over the whole head with rotate_half pairs. */
    public RotaryEmbedding(int headDim, double theta, int positions, YarnScaling yarn) {
        this(headDim, headDim, theta, positions, yarn, false);
    }

    /** RoPE over the whole head. */
    public RotaryEmbedding(int headDim, double theta, int positions, YarnScaling yarn, boolean interleaved) {
        this(headDim, headDim, theta, positions, yarn, interleaved);
    }

    /**
     * @param headDim     the head dimension hd
     * @param rotaryDim   the rotated leading part rd (even, ≤ hd)
     * @param yarn        YaRN scaling, or null for default RoPE
     * @param positions   the table covers positions [0, positions)
     * @param interleaved pairs (x[2i], x[2i+1]) instead of (x[i], x[i + rd/2])
     */
    public RotaryEmbedding(int headDim, int rotaryDim, double theta, int positions, YarnScaling yarn,
                           boolean interleaved) {
        if (rotaryDim < 2 || rotaryDim > headDim || rotaryDim % 2 != 0) {
            throw new IllegalArgumentException("rotary dimension must be even and in [2, head_dim " + headDim
                    + "], got " + rotaryDim);
        }
        this.headDim = headDim;
        this.rotaryDim = rotaryDim;
        this.positions = positions;
        this.interleaved = interleaved;
        int half = rotaryDim / 2;
        float[] invFreq = inverseFrequencies(rotaryDim, theta, yarn);
        float factor = yarn == null ? 1f : (float) yarn.cosSinFactor();
        cos = new float[positions * half];
        sin = new float[positions * half];
        for (int i = 0; i < half; i++) {
            for (int p = 0; p < positions; p++) {
                float angle = p * invFreq[i];
                cos[p * half + i] = (float) Math.cos(angle) * factor;
                sin[p * half + i] = (float) Math.sin(angle) * factor;
            }
        }
    }

    /**
     * inv_freq [dim/2] of a rotated part of {@code headDim} = dim entries, in float32 as transformers computes it (default RoPE when {@code yarn} is null). YaRN, with
     * s = factor and the bounds in float64 as Python computes them:
     * {@code low, high = correction range of (beta_fast, beta_slow)} (floor/ceil when truncate, clipped to
     * [0, hd − 1]); {@code e[i] = 1 − clamp((i − low)/(high − low), 0, 1)};
     * {@code inv[i] = θ^(-2i/hd)/s · (1 − e[i]) + θ^(-2i/hd) · e[i]}.
     */
    static float[] inverseFrequencies(int headDim, double theta, YarnScaling yarn) {
        int half = headDim / 2;
        float[] inv = new float[half];
        double low = 0;
        double high = 0;
        if (yarn != null) {
            low = correctionDim(yarn.beta_fast(), headDim, theta, yarn.original_max_position_embeddings());
            high = correctionDim(yarn.beta_slow(), headDim, theta, yarn.original_max_position_embeddings());
            if (yarn.truncate()) {
                low = Math.floor(low);
                high = Math.ceil(high);
            }
            low = Math.max(low, 0);
            high = Math.min(high, headDim - 1);
            if (low == high) {
                high += 0.001; // as transformers: no singular ramp
            }
        }
        for (int i = 0; i < half; i++) {
            float exponent = (float) (2 * i) / headDim;
            float posFreq = (float) Math.pow(theta, exponent);
            float extrapolated = 1f / posFreq;
            if (yarn == null) {
                inv[i] = extrapolated;
                continue;
            }
            float interpolated = 1f / ((float) yarn.factor() * posFreq);
            float ramp = Math.min(Math.max((i - (float) low) / (float) (high - low), 0f), 1f);
            float extrapolationShare = 1f - ramp;
            inv[i] = interpolated * (1f - extrapolationShare) + extrapolated * extrapolationShare;
        }
        return inv;
    }

    /** YaRN's dimension at which the wavelength makes {@code rotations} turns over {@code original} positions. */
    private static double correctionDim(double rotations, int dim, double theta, int original) {
        return (dim * Math.log(original / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
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
            int a = first(i);
            int b = second(i);
            float x1 = src[srcAt + a];
            float x2 = src[srcAt + b];
            float c = cos[row + i];
            float s = sin[row + i];
            dst[dstAt + a] = x1 * c + (-x2) * s;
            dst[dstAt + b] = x2 * c + x1 * s;
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
            int a = first(i);
            int b = second(i);
            double x1 = src[srcAt + a];
            double x2 = src[srcAt + b];
            double c = cos[row + i];
            double s = sin[row + i];
            dst[dstAt + a] = Flat.round(Flat.round(x1 * c, single) + Flat.round(-x2 * s, single), single);
            dst[dstAt + b] = Flat.round(Flat.round(x2 * c, single) + Flat.round(x1 * s, single), single);
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
            int a = first(i);
            int b = second(i);
            double d1 = dy[dyAt + a];
            double d2 = dy[dyAt + b];
            double c = cos[row + i];
            double s = sin[row + i];
            dx[dxAt + a] = d1 * c + d2 * s;
            dx[dxAt + b] = -d1 * s + d2 * c;
        }
    }

    /** The first element of pair i within the rotated part of a head. */
    private int first(int i) {
        return interleaved ? 2 * i : i;
    }

    /** The second element of pair i within the rotated part of a head. */
    private int second(int i) {
        return interleaved ? 2 * i + 1 : rotaryDim / 2 + i;
    }
}
