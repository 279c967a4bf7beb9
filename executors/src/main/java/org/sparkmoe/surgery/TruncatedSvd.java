package org.sparkmoe.surgery;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.openblas.global.openblas;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The best rank-R approximation of a matrix (Eckart–Young), as LoRA factors: M [out, in] ≈ B·A with
 * B = U_R·diag(σ_R) [out, R] and A = V_Rᵀ [R, in], from LAPACK's dgesvdx in float64: only the top R singular
 * triplets, thin. For M [rows, cols] with k = min(rows, cols) it QR- (or LQ-) factors M, bidiagonalises the k × k
 * factor and finds the R largest singular values and their vectors there (bisection and inverse iteration on the
 * Golub–Kahan tridiagonal), then carries the vectors back: one float64 copy of M [rows·cols] and about 3·k² of
 * LAPACK workspace ({@link #bytes}), never a full U [max², as gesvd's jobu = 'A'] or every vector of the k × k factor.
 */
public final class TruncatedSvd {
    /** B [out, R], A [R, in], both float64, and the discarded singular values' Σσ² (the squared Frobenius error). */
    public record Factors(INDArray b, INDArray a, double tailSquared) {
    }

    private TruncatedSvd() {
    }

    /** @param m [out, in]; 1 ≤ rank ≤ min(out, in) */
    public static Factors of(INDArray m, int rank) {
        long out = m.size(0);
        long in = m.size(1);
        long k = Math.min(out, in);
        if (rank < 1 || rank > k) {
            throw new IllegalArgumentException("--rank must be in [1, " + k + "] (the smaller side of a " + out + "×"
                    + in + " projection), got " + rank);
        }
        // M's row-major copy is, read column-major, Y = Mᵀ [in, out]; Y = U_Y·S·V_Yᵀ gives M = V_Y·S·U_Yᵀ
        INDArray y = m.castTo(DataType.DOUBLE).dup('c');                                        // [out, in] = Yᵀ
        INDArray s = Nd4j.create(DataType.DOUBLE, k);                                           // [k], σ_1..σ_R used
        INDArray a = Nd4j.create(DataType.DOUBLE, rank, in);                                    // U_Y [in, R] col-major
        INDArray vt = Nd4j.create(DataType.DOUBLE, out, rank);                                  // V_Yᵀ [R, out] col-major
        double frobenius2 = y.norm2Number().doubleValue();
        frobenius2 *= frobenius2;
        try (IntPointer found = new IntPointer(1); IntPointer superb = new IntPointer(12 * k)) {
            int info = openblas.LAPACKE_dgesvdx(openblas.LAPACK_COL_MAJOR, (byte) 'V', (byte) 'V', (byte) 'I',
                    (int) in, (int) out, pointer(y), (int) in, 0, 0, 1, rank, found, pointer(s),
                    pointer(a), (int) in, pointer(vt), rank, superb);
            if (info != 0 || found.get() != rank) {
                throw new IllegalStateException("LAPACK dgesvdx failed on a " + out + "×" + in + " matrix at rank " + rank
                        + " (info " + info + ", " + found.get() + " singular values found)");
            }
        }
        INDArray b = vt.mulRowVector(s.get(NDArrayIndex.interval(0, rank)));  // [out, R]
        double kept = 0;
        for (long j = 0; j < rank; j++) {
            kept += s.getDouble(j) * s.getDouble(j);
        }
        return new Factors(b, a, Math.max(0, frobenius2 - kept));
    }

    /**
     * Native bytes of one {@link #of} on an [out, in] matrix beside its input: its float64 copy, s [k], the factors
     * (U_Y, V_Yᵀ and B: 3 of R·max), and dgesvdx's workspace, k·(3k + 6) plus the blocked products' (at most 64 columns
     * of out + in), and 12·k integers.
     */
    public static long bytes(long out, long in, int rank) {
        long k = Math.min(out, in);
        return Double.BYTES * (out * in + k + 3L * rank * Math.max(out, in) + k * (3 * k + 6) + 64 * (out + in))
                + Integer.BYTES * 12L * k;
    }

    private static DoublePointer pointer(INDArray a) {
        return new DoublePointer(a.data().addressPointer());
    }
}
