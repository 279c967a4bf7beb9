package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Matrix products that leave no native garbage. ND4J's {@code a.mmul(b)} computes a 'c'-order result into an
 * 'f'-order temporary it never closes: one result's worth of native memory per product until the collector finds
 * the temporary's Java wrapper (deploy/bench/MmulGarbage.java: 8 MiB per 1024×1024 float64 product), which piles up
 * in loops of small products that allocate little on the heap (the ALS fits). Here the temporary is BLAS's own
 * 'f'-order result, copied once and freed at once; for two 'c'-order operands it is computed as (Bᵀ·Aᵀ)ᵀ, as
 * ND4J does, so that the values are mmul's.
 */
public final class Products {
    private Products() {
    }

    /** A·B, [m, k]·[k, n], as a new 'c'-order [m, n] array. */
    public static INDArray times(INDArray a, INDArray b) {
        boolean swapped = a.ordering() == 'c' && b.ordering() == 'c';
        INDArray f = swapped ? Nd4j.gemm(b, a, true, true) : Nd4j.gemm(a, b, false, false);  // [n, m] or [m, n]
        INDArray c = (swapped ? f.transpose() : f).dup('c');
        NativeBuffers.free(f);
        return c;
    }
}
