package org.sparkmoe.kernels;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.openblas.global.openblas;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A FLOAT or DOUBLE array seen as evenly spaced row-major matrices with unit column stride, addressed by pointer
 * arithmetic so that a matrix product on any row range ([N, cols], rank 2) or any stacked matrix ([G, rows, cols],
 * rank 3) goes straight to {@code cblas_sgemm}/{@code cblas_dgemm}: the OpenBLAS that ND4J calls, without making an
 * ND4J view (~10 µs each) or dispatching an ND4J op (~20 µs) per group. Every call builds its own pointers, so
 * threads may use one instance at once; it keeps its array reachable while a product runs.
 */
final class BlasMatrices {
    private final INDArray array;
    private final Pointer base;       // element 0; null when the array is empty
    private final boolean single;
    private final long ld;            // elements from one row to the next
    private final long step;          // elements from one stacked matrix to the next (rank 3)

    private BlasMatrices(INDArray array, Pointer base, long ld, long step) {
        this.array = array;
        this.base = base;
        this.single = array.dataType() == DataType.FLOAT;
        this.ld = ld;
        this.step = step;
    }

    /**
     * {@code a} itself when its layout allows it, else null (copy it to 'c' order and retry). {@code a} is
     * [N, cols] or [G, rows, cols], FLOAT or DOUBLE.
     */
    static BlasMatrices of(INDArray a) {
        int rank = a.rank();
        long rows = a.size(rank - 2);
        long cols = a.size(rank - 1);
        if (a.length() == 0) {
            return new BlasMatrices(a, null, Math.max(1, cols), 0);
        }
        if (a.data() == null || a.data().addressPointer() == null || (cols > 1 && a.stride(rank - 1) != 1)) {
            return null;
        }
        long ld = rows == 1 ? cols : a.stride(rank - 2);
        long step = rank == 3 && a.size(0) > 1 ? a.stride(0) : 0;
        if (ld < cols || ld > Integer.MAX_VALUE || step < 0) {
            return null;
        }
        long shift = a.offset() - a.data().offset();   // a view's data() already starts at its offset
        Pointer p = a.dataType() == DataType.FLOAT
                ? new FloatPointer(a.data().addressPointer()).position(shift)
                : new DoublePointer(a.data().addressPointer()).position(shift);
        return new BlasMatrices(a, p, ld, step);
    }

    INDArray array() {
        return array;
    }

    /** The same matrices from column {@code first} on (same leading dimension): a column block, by pointer. */
    BlasMatrices fromColumn(long first) {
        if (first == 0 || base == null) {
            return this;
        }
        Pointer shifted = single ? new FloatPointer(base).position(base.position() + first)
                : new DoublePointer(base).position(base.position() + first);
        return new BlasMatrices(array, shifted, ld, step);
    }

    /**
     * {@code c = op(a)·op(b) + beta·c} on sub-matrices: each operand is (its array's stacked matrix {@code m}, or
     * matrix 0 of a rank-2 array) from row {@code row}; c is [rows, cols], the inner size {@code inner}.
     */
    static void gemm(BlasMatrices a, long aMatrix, long aRow, boolean transA,
                     BlasMatrices b, long bMatrix, long bRow, boolean transB,
                     BlasMatrices c, long cMatrix, long cRow, int rows, int cols, int inner, double beta) {
        int ta = transA ? openblas.CblasTrans : openblas.CblasNoTrans;
        int tb = transB ? openblas.CblasTrans : openblas.CblasNoTrans;
        if (c.single) {
            openblas.cblas_sgemm(openblas.CblasRowMajor, ta, tb, rows, cols, inner, 1f, (FloatPointer) a.at(aMatrix, aRow),
                    (int) a.ld, (FloatPointer) b.at(bMatrix, bRow), (int) b.ld, (float) beta,
                    (FloatPointer) c.at(cMatrix, cRow), (int) c.ld);
        } else {
            openblas.cblas_dgemm(openblas.CblasRowMajor, ta, tb, rows, cols, inner, 1.0,
                    (DoublePointer) a.at(aMatrix, aRow), (int) a.ld, (DoublePointer) b.at(bMatrix, bRow), (int) b.ld,
                    beta, (DoublePointer) c.at(cMatrix, cRow), (int) c.ld);
        }
        java.lang.ref.Reference.reachabilityFence(a.array);
        java.lang.ref.Reference.reachabilityFence(b.array);
        java.lang.ref.Reference.reachabilityFence(c.array);
    }

    /** A new pointer to row {@code row} of stacked matrix {@code m}; null for an empty array (BLAS reads none). */
    private Pointer at(long m, long row) {
        if (base == null) {
            return null;
        }
        long position = base.position() + m * step + row * ld;
        return single ? new FloatPointer(base).position(position) : new DoublePointer(base).position(position);
    }
}
