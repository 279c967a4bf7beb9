package org.sparkmoe.lora;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A shared-base MoLoRA FFN ("100× more experts in the same memory"): one frozen SwiGLU FFN for every token plus
 * E LoRA experts per projection, K of them routed per token with weights g (softmax over E, top-K, optionally
 * renormalised) and scale s:
 * <pre>
 *   h1 = x·W1ᵀ + Σ_k g_k·s·(x·A1_kᵀ)·B1_kᵀ      [T, I]
 *   h3 = x·W3ᵀ + Σ_k g_k·s·(x·A3_kᵀ)·B3_kᵀ      [T, I]
 *   a  = silu(h1) ⊙ h3                          [T, I]
 *   y  = a·W2ᵀ  + Σ_k g_k·s·(a·A2_kᵀ)·B2_kᵀ      [T, D]
 * </pre>
 * Two implementations behind this interface: {@link SharedBaseLoraFactorised} (the fast one: gather, grouped
 * shrink/expand, scatter-add; no per-token weights) and {@link SharedBaseLoraNaive} (the reference: per token
 * {@code W_eff(t) = W + Σ_k g_k·s·B_k·A_k} materialised for every projection). Implementations are stateless and
 * re-entrant: everything a backward pass needs lives in the {@link Pass} its forward returned.
 */
public interface SharedBaseLoraExperts {

    /** What a forward pass produced and keeps for its backward pass. */
    interface Pass {
        /** y [T, D]. */
        INDArray output();

        /** The routing decision (held constant by the backward pass). */
        SharedBaseRouting routing();

        /** Bytes of every array this forward pass allocated (equals {@link #forwardBytes} for its shapes). */
        long allocatedBytes();
    }

    /** x [T, D] → pass with y [T, D]; x in the weights' data type. */
    Pass forward(SharedBaseLoraWeights weights, INDArray x);

    /**
     * Gradients for the adapters, router gate and input from dy [T, D] = dL/dy, computed in exact reverse
     * order of the forward pass; the base weights are frozen.
     */
    SharedBaseGradients backward(SharedBaseLoraWeights weights, Pass pass, INDArray dy);

    /**
     * Bytes of the intermediates a forward pass allocates (routing included, input and weights excluded) for
     * T tokens, hidden D, intermediate I, E experts, K per token, rank R, in data type dt — the closed form of
     * {@link Pass#allocatedBytes()}.
     */
    long forwardBytes(long t, long d, long i, long e, long k, long r, DataType dt);
}
