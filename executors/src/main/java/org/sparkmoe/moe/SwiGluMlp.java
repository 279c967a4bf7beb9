package org.sparkmoe.moe;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Dense;

/** A dense SwiGLU FFN: {@code y = (silu(x·Wgᵀ) ⊙ (x·Wuᵀ)) · Wdᵀ} (Mistral MLP, Qwen2-MoE shared expert). */
public final class SwiGluMlp {
    private final INDArray gateProj; // [I, D]
    private final INDArray upProj;   // [I, D]
    private final INDArray downProj; // [D, I]

    public SwiGluMlp(INDArray gateProj, INDArray upProj, INDArray downProj) {
        this.gateProj = gateProj;
        this.upProj = upProj;
        this.downProj = downProj;
    }

    /** x [T, D] → [T, D]. */
    public INDArray forward(INDArray x) {
        INDArray act = Activations.swiGlu(Dense.linear(x, gateProj), Dense.linear(x, upProj)); // [T, I]
        return Dense.linear(act, downProj);
    }
}
