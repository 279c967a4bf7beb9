package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Dense products with Hugging Face Linear weights ([out, in]); results are new 'c'-order arrays of x's type. */
public final class Dense {
    private Dense() {
    }

    /** y [T, out] = x [T, in] · wᵀ, w [out, in]. */
    public static INDArray linear(INDArray x, INDArray w) {
        INDArray y = Nd4j.createUninitialized(x.dataType(), new long[] {x.size(0), w.size(0)}, 'c');
        Nd4j.gemm(x, w, y, false, true, 1.0, 0.0);
        return y;
    }

    /** dx [T, in] = dy [T, out] · w, w [out, in]: the input gradient of {@link #linear(INDArray, INDArray)}. */
    public static INDArray linearBackward(INDArray dy, INDArray w) {
        INDArray dx = Nd4j.createUninitialized(dy.dataType(), new long[] {dy.size(0), w.size(1)}, 'c');
        Nd4j.gemm(dy, w, dx, false, false, 1.0, 0.0);
        return dx;
    }

    /** y [T, out] = x [T, in] · wᵀ + bias, bias [out] or null. */
    public static INDArray linear(INDArray x, INDArray w, INDArray bias) {
        INDArray y = linear(x, w);
        return bias == null ? y : y.addiRowVector(bias);
    }
}
