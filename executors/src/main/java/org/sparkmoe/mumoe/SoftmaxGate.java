package org.sparkmoe.mumoe;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Softmax;

/**
 * The soft gate of one level: a = softmax(x·G) over the N experts, G [I, N]. Forward and backward are a pair; the
 * softmax rows are {@link Softmax}'s (float32 rows rounded exactly as its float path when the layer is FLOAT).
 */
final class SoftmaxGate {
    private SoftmaxGate() {
    }

    /** a [T, N] = softmax_rows(x [T, I] · g [I, N]). */
    static INDArray forward(INDArray x, INDArray g) {
        INDArray z = Nd4j.gemm(x, g, false, false);           // [T, N] logits
        return softmaxRows(z);
    }

    /** a [T, N] = softmax over each row of z [T, N], in z's type. */
    static INDArray softmaxRows(INDArray z) {
        int t = (int) z.size(0);
        int n = (int) z.size(1);
        boolean single = z.dataType() == DataType.FLOAT;
        double[] v = z.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        for (int row = 0; row < t; row++) {
            Softmax.row(v, row * n, n, single);
        }
        return Nd4j.create(v, new long[] {t, n}, 'c').castTo(z.dataType());
    }

    /**
     * The mirror of {@link #forward}: given a [T, N] and da [T, N], adds dL/dx [T, I] into {@code dx} and returns
     * dL/dG [I, N]. In reverse order: dz = a ⊙ (da − ⟨a, da⟩) per row; dG = xᵀ·dz; dx += dz·Gᵀ.
     */
    static INDArray backward(INDArray x, INDArray g, INDArray a, INDArray da, INDArray dx) {
        INDArray dz = softmaxRowsBackward(a, da);             // [T, N]
        dx.addi(Nd4j.gemm(dz, g, false, true));                // [T, I]
        return Nd4j.gemm(x, dz, true, false);                  // [I, N]
    }

    /** dz [T, N] = a ⊙ (da − ⟨a, da⟩) per row, in a's type. */
    static INDArray softmaxRowsBackward(INDArray a, INDArray da) {
        int t = (int) a.size(0);
        int n = (int) a.size(1);
        double[] p = a.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        double[] d = da.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        for (int row = 0; row < t; row++) {
            Softmax.rowBackward(p, d, row * n, n);
        }
        return Nd4j.create(d, new long[] {t, n}, 'c').castTo(a.dataType());
    }
}
