package org.sparkmoe.mumoe;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A μMoE layer: y = Σₙ aₙ(x) · Wₙᵀx per token, with gates a = act(Gᵀx) over the N experts, act softmax or
 * entmax-1.5 ({@link GateActivation}; one gate per level of a hierarchy, the mixture weights being the outer product
 * of the levels' gates), and W [N, I, O] held in factorised form. Stateless between calls (no per-call scratch in
 * fields), so one layer may serve several threads.
 */
public interface MumoeLayer {
    /** The gates and the expert factors or cores this layer computes with (shared, not copied). */
    MumoeWeights weights();

    /** Forward over x [T, I]: y [T, O] and the gates a_l [T, N_l], plus what the backward pass needs. */
    MumoePass forward(INDArray x);

    /** Backward of {@link #forward}, given dL/dy [T, O]: dL/dθ for every parameter and dL/dx [T, I]. */
    MumoeGradients backward(MumoePass pass, INDArray dy);
}
