package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One matrix product per group of contiguous rows, each with its own weight matrix, and the two products of
 * its backward pass. Groups are the row ranges of a routing plan: group g (an expert) owns rows
 * {@code offsets[g]..offsets[g+1]-1}. Weights are stacked in Hugging Face's Linear layout {@code [G, out, in]}
 * (LoRA A is {@code [E, R, in]}, LoRA B {@code [E, out, R]}, so both fit). Empty groups are skipped and no rows
 * are copied. Rows and gradients are float32 or float64 (all of one type); weights are a {@link WeightStack} of that
 * type or stored narrower (bf16/fp16 from a mapped checkpoint, widened per use). Implementations are stateless.
 */
public interface GroupedGemm {

    /**
     * {@code y[g] = x[g] · W_gᵀ}, or {@code y[g] += x[g] · W_gᵀ} when {@code accumulate}.
     *
     * @param x [N, in]
     * @param w [G, out, in]
     * @param y [N, out]
     */
    void forward(INDArray x, WeightStack w, int[] offsets, INDArray y, boolean accumulate);

    /** {@link #forward(INDArray, WeightStack, int[], INDArray, boolean)} with stacked weights w [G, out, in]. */
    default void forward(INDArray x, INDArray w, int[] offsets, INDArray y, boolean accumulate) {
        forward(x, WeightStack.of(w), offsets, y, accumulate);
    }

    /** {@link #forward(INDArray, WeightStack, int[], INDArray, boolean)} overwriting {@code y}. */
    default void forward(INDArray x, WeightStack w, int[] offsets, INDArray y) {
        forward(x, w, offsets, y, false);
    }

    /** {@link #forward(INDArray, WeightStack, int[], INDArray, boolean)} overwriting {@code y}. */
    default void forward(INDArray x, INDArray w, int[] offsets, INDArray y) {
        forward(x, WeightStack.of(w), offsets, y, false);
    }

    /**
     * Gradient with respect to the input: {@code dx[g] (+)= dy[g] · W_g}.
     *
     * @param dy [N, out]
     * @param w  [G, out, in]
     * @param dx [N, in]
     */
    void backwardInput(INDArray dy, WeightStack w, int[] offsets, INDArray dx, boolean accumulate);

    /** {@link #backwardInput(INDArray, WeightStack, int[], INDArray, boolean)} with stacked weights [G, out, in]. */
    default void backwardInput(INDArray dy, INDArray w, int[] offsets, INDArray dx, boolean accumulate) {
        backwardInput(dy, WeightStack.of(w), offsets, dx, accumulate);
    }

    /**
     * Gradient with respect to the weights: {@code dW_g (+)= dy[g]ᵀ · x[g]}. Without {@code accumulate}, the
     * weight gradients of empty groups are set to zero.
     *
     * @param dy [N, out]
     * @param x  [N, in]
     * @param dw [G, out, in]
     */
    void backwardWeight(INDArray dy, INDArray x, int[] offsets, INDArray dw, boolean accumulate);

    /**
     * The threads this implementation spreads its groups over; callers run their own row-parallel element-wise
     * work between products on them (same cores, never more threads than the products use).
     */
    default Workers workers() {
        return Workers.SERIAL;
    }
}
