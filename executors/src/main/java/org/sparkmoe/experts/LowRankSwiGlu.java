package org.sparkmoe.experts;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.ops.transforms.Transforms;

/** The dtype-generic elementwise middle of a SwiGLU FFN: {@code a = silu(h1) ⊙ h3}, silu(z) = z·σ(z). */
final class LowRankSwiGlu {
    private LowRankSwiGlu() {
    }

    /** σ(h1) [T, I], kept for the backward pass. */
    static INDArray sigmoid(INDArray h1, LowRankScratch scratch) {
        return scratch.count(Transforms.sigmoid(h1, true));
    }

    /** a = h1 ⊙ σ(h1) ⊙ h3 [T, I]. */
    static INDArray forward(INDArray h1, INDArray sig, INDArray h3, LowRankScratch scratch) {
        return scratch.count(h1.mul(sig)).muli(h3);
    }

    /**
     * From da [T, I]: dh3 = da ⊙ silu(h1); dh1 = da ⊙ h3 ⊙ σ(h1)·(1 + h1·(1 − σ(h1))). Returns {dh1, dh3}.
     */
    static INDArray[] backward(INDArray da, INDArray h1, INDArray sig, INDArray h3) {
        INDArray dh3 = da.mul(h1).muli(sig);                                     // da ⊙ silu(h1)
        INDArray dsilu = sig.rsub(1.0).muli(h1).addi(1.0).muli(sig);              // σ(1 + h1(1 − σ))
        INDArray dh1 = dsilu.muli(da).muli(h3);
        return new INDArray[] {dh1, dh3};
    }
}
