package org.sparkmoe.mumoe;

import java.util.Locale;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Softmax;

/**
 * The gate of one level: a = act(x·G) over the N experts, G [I, N], act softmax or entmax-1.5 per row. Forward and
 * backward are a pair. Softmax rows are {@link Softmax}'s (float32 rows rounded exactly as its float path when the
 * layer is FLOAT); entmax-1.5 rows are {@link Entmax15}'s, computed in float64 and rounded once to the layer's type.
 * Entmax-1.5 is the μMoE paper's gate (Oldfield et al., NeurIPS 2024, after Peters et al., ACL 2019): sparse, convex
 * expert coefficients, many exactly 0.
 */
public enum GateActivation {
    SOFTMAX,
    ENTMAX15;

    /** "softmax" or "entmax15": the adapter config's and the --mumoe-gate flag's spelling. */
    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static GateActivation parse(String id, String source) {
        for (GateActivation g : values()) {
            if (g.id().equals(id)) {
                return g;
            }
        }
        throw new IllegalArgumentException(source + ": unknown μMoE gate '" + id + "', expected softmax or entmax15");
    }

    /** a [T, N] = act_rows(x [T, I] · g [I, N]). */
    INDArray forward(INDArray x, INDArray g) {
        INDArray z = Nd4j.gemm(x, g, false, false);           // [T, N] logits
        return rows(z);
    }

    /** a [T, N] = act over each row of z [T, N], in z's type. */
    INDArray rows(INDArray z) {
        int t = (int) z.size(0);
        int n = (int) z.size(1);
        boolean single = z.dataType() == DataType.FLOAT;
        double[] v = z.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        for (int row = 0; row < t; row++) {
            if (this == SOFTMAX) {
                Softmax.row(v, row * n, n, single);
            } else {
                Entmax15.row(v, row * n, n);
            }
        }
        return Nd4j.create(v, new long[] {t, n}, 'c').castTo(z.dataType());
    }

    /**
     * The mirror of {@link #forward}: given a [T, N] and da [T, N], adds dL/dx [T, I] into {@code dx} and returns
     * dL/dG [I, N]. In reverse order: dz = act'(a)ᵀ·da per row; dG = xᵀ·dz; dx += dz·Gᵀ.
     */
    INDArray backward(INDArray x, INDArray g, INDArray a, INDArray da, INDArray dx) {
        INDArray dz = rowsBackward(a, da);                     // [T, N]
        dx.addi(Nd4j.gemm(dz, g, false, true));                // [T, I]
        return Nd4j.gemm(x, dz, true, false);                  // [I, N]
    }

    /**
     * dz [T, N] per row, in a's type: softmax a ⊙ (da − ⟨a, da⟩); entmax-1.5 s ⊙ (da − ⟨s, da⟩ / Σ s), s = √a.
     */
    INDArray rowsBackward(INDArray a, INDArray da) {
        int t = (int) a.size(0);
        int n = (int) a.size(1);
        double[] p = a.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        double[] d = da.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        for (int row = 0; row < t; row++) {
            if (this == SOFTMAX) {
                Softmax.rowBackward(p, d, row * n, n);
            } else {
                Entmax15.rowBackward(p, d, row * n, n);
            }
        }
        return Nd4j.create(d, new long[] {t, n}, 'c').castTo(a.dataType());
    }
}
