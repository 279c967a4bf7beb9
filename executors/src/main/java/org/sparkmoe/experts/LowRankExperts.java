package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Low-rank experts (a model converted by {@code surgery lowrank}; the MoLoRA form, "100× more experts in the same
 * memory"):
 * one frozen gated FFN every token uses plus E LoRA experts per projection, K of them routed per token with
 * weights g and LoRA scale s (gpt-oss: plus each expert's frozen biases c, mixed with the same g):
 * <pre>
 *   h1 = x·W1ᵀ + Σ_k g_k·s·(x·A1_kᵀ)·B1_kᵀ (+ Σ_k g_k·c1_k)      [T, I]
 *   h3 = x·W3ᵀ + Σ_k g_k·s·(x·A3_kᵀ)·B3_kᵀ (+ Σ_k g_k·c3_k)      [T, I]
 *   a  = f(h1, h3): silu(h1) ⊙ h3, or gpt-oss's clamped gate      [T, I]
 *   y  = a·W2ᵀ  + Σ_k g_k·s·(a·A2_kᵀ)·B2_kᵀ (+ Σ_k g_k·c2_k)      [T, D]
 * </pre>
 * Two implementations: {@link LowRankFactorised} (the fast one: gather, grouped shrink/expand, scatter-add; no
 * per-token weights) and {@link LowRankNaive} (the reference: per token {@code W_eff(t) = W + Σ_k g_k·s·B_k·A_k}
 * materialised for every projection). The weights g enter linearly, so the backward pass returns dL/dg per pair and
 * leaves the router to the MoE block.
 */
public abstract class LowRankExperts implements ExpertFfn {
    final LowRankWeights weights;

    LowRankExperts(LowRankWeights weights) {
        this.weights = weights;
    }

    /** The shared base and the LoRA experts (read-only use). */
    public LowRankWeights weights() {
        return weights;
    }

    /** The same kind of experts over other weights (the same base with trainable adapters). */
    public abstract LowRankExperts with(LowRankWeights w);

    /**
     * Bytes of the intermediates a forward pass allocates (input and weights excluded) for T tokens, hidden D,
     * intermediate I, E experts, K per token, rank R, in data type dt — the closed form of
     * {@link LowRankPass#allocatedBytes()}.
     */
    public abstract long forwardBytes(long t, long d, long i, long e, long k, long r, DataType dt);

    @Override
    public int experts() {
        return weights.experts();
    }

    @Override
    public int hidden() {
        return weights.hidden();
    }

    @Override
    public DataType dataType() {
        return weights.dataType();
    }

    void checkInput(INDArray x) {
        if (x.rank() != 2 || x.size(1) != hidden() || x.dataType() != dataType()) {
            throw new IllegalArgumentException("low-rank experts' input must be [T, " + hidden() + "] "
                    + dataType() + ", got " + Arrays.toString(x.shape()) + " " + x.dataType());
        }
        if (x.ordering() != 'c' || x.isView()) {
            throw new IllegalArgumentException("low-rank experts' input must be a 'c'-order array, not a view");
        }
    }

    static void checkDy(INDArray dy, INDArray y) {
        if (!Arrays.equals(dy.shape(), y.shape()) || dy.dataType() != y.dataType()) {
            throw new IllegalArgumentException("dy must be " + Arrays.toString(y.shape()) + " " + y.dataType()
                    + ", got " + Arrays.toString(dy.shape()) + " " + dy.dataType());
        }
    }
}
