package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;

/**
 * RMSNorm as transformers computes it in float32: {@code w ⊙ (x · rsqrt(mean(x²) + eps))}. The training pair
 * ({@link #forwardTraining}, {@link #backward}) takes FLOAT or DOUBLE; in FLOAT it is bit-identical to
 * {@link #forward}.
 */
public final class RmsNorm {
    private final float[] weight; // [D]
    private final double eps;

    public RmsNorm(INDArray weight, double eps) {
        this.weight = weight.dup('c').data().asFloat();
        this.eps = eps;
    }

    /** x [T, D] → new [T, D]. */
    public INDArray forward(INDArray x) {
        int hidden = weight.length;
        float[] v = Flat.floats(x);
        for (int at = 0; at < v.length; at += hidden) {
            double sumSq = 0;
            for (int d = 0; d < hidden; d++) {
                sumSq += v[at + d] * v[at + d];
            }
            float inv = (float) (1.0 / Math.sqrt((float) (sumSq / hidden) + eps));
            for (int d = 0; d < hidden; d++) {
                v[at + d] = weight[d] * (v[at + d] * inv);
            }
        }
        return Flat.array(v, x.shape());
    }

    /**
     * The forward result and what {@link #backward} needs.
     *
     * @param x   [T, D] the input
     * @param inv [T] r = rsqrt(mean(x²) + eps) per row
     * @param out [T, D]
     */
    public record Forward(INDArray x, double[] inv, INDArray out) {
    }

    /** x [T, D] → out [T, D], FLOAT or DOUBLE. */
    public Forward forwardTraining(INDArray x) {
        int hidden = weight.length;
        boolean single = x.dataType() == org.nd4j.linalg.api.buffer.DataType.FLOAT;
        double[] v = Flat.values(x);
        double[] inv = new double[v.length / hidden];
        for (int t = 0; t < inv.length; t++) {
            int at = t * hidden;
            double sumSq = 0;
            for (int d = 0; d < hidden; d++) {
                sumSq += Flat.round(v[at + d] * v[at + d], single);
            }
            inv[t] = Flat.round(1.0 / Math.sqrt(Flat.round(sumSq / hidden, single) + eps), single);
            for (int d = 0; d < hidden; d++) {
                v[at + d] = Flat.round(weight[d] * Flat.round(v[at + d] * inv[t], single), single);
            }
        }
        return new Forward(x, inv, Flat.array(v, x.shape(), x.dataType()));
    }

    /**
     * The mirror of {@link #forwardTraining}: with y = w ⊙ x·r, {@code dx = r·(w ⊙ dy) − x · r³/D · Σ(w ⊙ dy ⊙ x)}
     * (the weight is frozen).
     *
     * @param dOut [T, D]
     * @return dx [T, D]
     */
    public INDArray backward(Forward fwd, INDArray dOut) {
        int hidden = weight.length;
        double[] x = Flat.values(fwd.x());
        double[] dy = Flat.values(dOut);
        double[] dx = new double[x.length];
        for (int t = 0; t < fwd.inv().length; t++) {
            int at = t * hidden;
            double r = fwd.inv()[t];
            double dot = 0;
            for (int d = 0; d < hidden; d++) {
                dot += weight[d] * dy[at + d] * x[at + d];
            }
            double c = r * r * r * dot / hidden;
            for (int d = 0; d < hidden; d++) {
                dx[at + d] = r * weight[d] * dy[at + d] - x[at + d] * c;
            }
        }
        return Flat.array(dx, dOut.shape(), dOut.dataType());
    }
}
