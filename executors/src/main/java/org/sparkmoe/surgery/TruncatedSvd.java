package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The best rank-R approximation of a matrix (Eckart–Young), as LoRA factors: M [out, in] ≈ B·A with
 * B = U_R·diag(σ_R) [out, R] and A = V_Rᵀ [R, in], from LAPACK's SVD (gesvd) in float64.
 */
public final class TruncatedSvd {
    /** B [out, R], A [R, in], both float64, and the discarded singular values' Σσ² (the squared Frobenius error). */
    public record Factors(INDArray b, INDArray a, double tailSquared) {
    }

    private TruncatedSvd() {
    }

    /** @param m [out, in]; 1 ≤ rank ≤ min(out, in) */
    public static Factors of(INDArray m, int rank) {
        long k = Math.min(m.size(0), m.size(1));
        if (rank < 1 || rank > k) {
            throw new IllegalArgumentException("--rank must be in [1, " + k + "] (the smaller side of a " + m.size(0) + "×"
                    + m.size(1) + " projection), got " + rank);
        }
        // LAPACK gesvd on the tall orientation ('f' order, full U and Vᵀ); Mᵀ = U·S·Vᵀ gives M = V·S·Uᵀ
        boolean wide = m.size(0) < m.size(1);
        INDArray x = (wide ? m.transpose() : m).castTo(DataType.DOUBLE).dup('f');               // [rows ≥ cols]
        INDArray s = Nd4j.create(DataType.DOUBLE, k);                                           // [k]
        INDArray u = Nd4j.create(DataType.DOUBLE, new long[] {x.size(0), x.size(0)}, 'f');      // [rows, rows]
        INDArray vt = Nd4j.create(DataType.DOUBLE, new long[] {x.size(1), x.size(1)}, 'f');     // [cols, cols]
        Nd4j.getBlasWrapper().lapack().gesvd(x.dup('f'), s, u, vt);
        INDArray uR = u.get(NDArrayIndex.all(), NDArrayIndex.interval(0, rank));                // [rows, R]
        INDArray vR = vt.get(NDArrayIndex.interval(0, rank), NDArrayIndex.all()).transpose();   // [cols, R]
        INDArray sR = s.get(NDArrayIndex.interval(0, rank));
        INDArray b = (wide ? vR : uR).mulRowVector(sR).dup('c');                                // [out, R]
        INDArray a = (wide ? uR : vR).transpose().dup('c');                                     // [R, in]
        double tail = 0;
        for (long j = rank; j < k; j++) {
            tail += s.getDouble(j) * s.getDouble(j);
        }
        return new Factors(b, a, tail);
    }
}
