package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** RMSNorm as transformers computes it in float32: {@code w ⊙ (x · rsqrt(mean(x²) + eps))}. */
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
        float[] v = x.dup('c').data().asFloat();
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
        return Nd4j.create(v, x.shape(), 'c');
    }
}
