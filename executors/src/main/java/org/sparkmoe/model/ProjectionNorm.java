package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.NativeElements;

/**
 * What Qwen3 and OLMoE do to one of the q, k, v projections before the heads are split, as transformers'
 * {@code Qwen3MoeAttention} and {@code OlmoeAttention}: an optional RMSNorm, then an optional clamp to [−c, c].
 * The norm acts on consecutive chunks of its weight's length N in each row of the projection [T, n·hd]:
 * <ul>
 *   <li>Qwen3 ({@code q_norm}/{@code k_norm} [hd]): N = hd, one norm per head. transformers applies it after the
 *   reshape to [T, n, hd]; a row chunk of hd values is exactly one head, so normalising before the split is the
 *   same computation.</li>
 *   <li>OLMoE ({@code q_norm} [H·hd], {@code k_norm} [KVH·hd]): N = n·hd, the whole projection; then
 *   {@code clip_qkv} clamps q, k and v.</li>
 * </ul>
 * The training pair takes FLOAT or DOUBLE, works in the arrays' own memory a chunk at a time (no float64 copies) and
 * in FLOAT is bit-identical to {@link #forward}; the weights are frozen.
 */
public final class ProjectionNorm {
    /** Neither norm nor clamp: the projection passes unchanged. */
    public static final ProjectionNorm IDENTITY = new ProjectionNorm(null, null);

    /** Elements the clamp reads and writes at a time (float64 scratch of 32 KiB). */
    private static final int CHUNK = 4096;

    private final RmsNorm norm;  // null = no norm
    private final Double clip;   // null = no clamp

    /**
     * @param norm RMSNorm over chunks of its weight's length, or null
     * @param clip the clamp bound c > 0, or null
     */
    public ProjectionNorm(RmsNorm norm, Double clip) {
        if (clip != null && !(clip > 0)) {
            throw new IllegalArgumentException("clip_qkv must be > 0, got " + clip);
        }
        this.norm = norm;
        this.clip = clip;
    }

    public boolean isIdentity() {
        return norm == null && clip == null;
    }

    /** projected [T, n·hd] → [T, n·hd] (the input itself when this is the identity). */
    public INDArray forward(INDArray projected) {
        INDArray y = norm == null ? projected : norm.forward(projected);
        if (clip == null) {
            return y;
        }
        float c = clip.floatValue();
        float[] v = Flat.floats(y);
        for (int i = 0; i < v.length; i++) {
            v[i] = Math.min(Math.max(v[i], -c), c);
        }
        return Flat.array(v, y.shape());
    }

    /**
     * The training forward result.
     *
     * @param normed the norm's forward, or null without a norm
     * @param beforeClamp [T, n·hd] the values the clamp saw (null without a clamp)
     * @param out [T, n·hd]
     */
    public record Forward(RmsNorm.Forward normed, INDArray beforeClamp, INDArray out) {
    }

    /** projected [T, n·hd] → Forward, FLOAT or DOUBLE. */
    public Forward forwardTraining(INDArray projected) {
        RmsNorm.Forward normed = norm == null ? null : norm.forwardTraining(projected);
        INDArray y = normed == null ? projected : normed.out();
        if (clip == null) {
            return new Forward(normed, null, y);
        }
        double c = Flat.round(clip, projected.dataType() == DataType.FLOAT);
        INDArray clamped = Nd4j.createUninitialized(y.dataType(), y.shape(), 'c');
        if (y.length() > 0) {
            NativeElements in = NativeElements.of(y);
            NativeElements out = NativeElements.of(clamped);
            double[] v = new double[CHUNK];
            float[] staging = new float[CHUNK];
            for (long at = 0; at < y.length(); at += CHUNK) {
                int n = (int) Math.min(CHUNK, y.length() - at);
                in.read(at, v, n, staging);
                for (int i = 0; i < n; i++) {
                    v[i] = Math.min(Math.max(v[i], -c), c);
                }
                out.write(at, v, n, staging);
            }
        }
        return new Forward(normed, y, clamped);
    }

    /**
     * The mirror of {@link #forwardTraining}: the clamp passes the gradient where −c ≤ value ≤ c (as torch's clamp
     * does) and zero elsewhere; then the norm's backward.
     *
     * @param dOut [T, n·hd]
     * @return dprojected [T, n·hd]
     */
    public INDArray backward(Forward fwd, INDArray dOut) {
        INDArray d = dOut;
        if (clip != null && dOut.length() > 0) {
            double c = Flat.round(clip, dOut.dataType() == DataType.FLOAT);
            d = Nd4j.createUninitialized(dOut.dataType(), dOut.shape(), 'c');
            NativeElements before = NativeElements.of(fwd.beforeClamp());
            NativeElements in = NativeElements.of(dOut);
            NativeElements out = NativeElements.of(d);
            double[] b = new double[CHUNK];
            double[] g = new double[CHUNK];
            float[] staging = new float[CHUNK];
            for (long at = 0; at < dOut.length(); at += CHUNK) {
                int n = (int) Math.min(CHUNK, dOut.length() - at);
                before.read(at, b, n, staging);
                in.read(at, g, n, staging);
                for (int i = 0; i < n; i++) {
                    if (b[i] < -c || b[i] > c) {
                        g[i] = 0;
                    }
                }
                out.write(at, g, n, staging);
            }
        }
        return norm == null ? d : norm.backward(fwd.normed(), d);
    }
}
