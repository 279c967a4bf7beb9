package org.sparkmoe.cuda;

import java.nio.FloatBuffer;

/**
 * One MoE layer's E SwiGLU experts as {@code moe_lora.cu} computes them, seen from host memory: the frozen W1, W3
 * [E, I, D] and W2 [E, D, I] are the implementation's own (resident on a GPU for {@link ResidentExpertLayer}), LoRA
 * of rank R on all three projections with the layer's one scale s:
 * <pre>
 *   xs  = x[tokenOfRow]                                   [N, D]   N = T·K, plan order (sorted by expert)
 *   h1  = xs·W1ᵀ + s·(xs·A1ᵀ)·B1ᵀ,  h3 likewise         [N, I]
 *   act = silu(h1) ⊙ h3                                   [N, I]
 *   ys  = act·W2ᵀ + s·(act·A2ᵀ)·B2ᵀ                       [N, D]
 *   out[t] = Σ_k weightOfRow[r]·ys[r], r = the plan row of pair t·K + k, k ascending   [T, D]
 * </pre>
 * Every buffer is float32 in 'c' order, read or written from its position 0 (an implementation may compute in a
 * narrower type: bf16 on the GPU). {@link #backward} runs after the {@link #forward} whose state it needs; not
 * thread-safe (one pass at a time).
 */
public interface ExpertLayer extends AutoCloseable {

    /**
     * A routing plan (the arrays of {@code routing.RoutingPlan}).
     *
     * @param offsets     [E+1] expert e owns plan rows offsets[e]..offsets[e+1]-1
     * @param perm        [N] the pair index t·K + k of each plan row
     * @param tokenOfRow  [N]
     * @param weightOfRow [N]
     */
    record Plan(int tokens, int topK, int[] offsets, int[] perm, int[] tokenOfRow, float[] weightOfRow) {
        public Plan {
            if (perm.length != (long) tokens * topK || tokenOfRow.length != perm.length
                    || weightOfRow.length != perm.length) {
                throw new IllegalArgumentException("a plan of " + tokens + " tokens × top-" + topK + " has "
                        + (long) tokens * topK + " rows, got perm " + perm.length + ", tokenOfRow "
                        + tokenOfRow.length + ", weightOfRow " + weightOfRow.length);
            }
        }

        /** N = T·K. */
        public int rows() {
            return perm.length;
        }
    }

    /**
     * Where {@link #backward} writes: the LoRA gradients dA1, dA3 [E, R, D], dB1, dB3 [E, I, R], dA2 [E, R, I], dB2
     * [E, D, R], and dGates [N] = dOut[token]·ys[row] in plan row order (the routing weights' gradient).
     */
    record Gradients(FloatBuffer dA1, FloatBuffer dB1, FloatBuffer dA3, FloatBuffer dB3, FloatBuffer dA2,
                     FloatBuffer dB2, FloatBuffer dGates) {
    }

    /** E. */
    int experts();

    /** D. */
    int hidden();

    /** I. */
    int intermediate();

    /** R. */
    int rank();

    /** Takes the LoRA factors a1, a3 [E, R, D], b1, b3 [E, I, R], a2 [E, R, I], b2 [E, D, R] for later passes. */
    void setLora(FloatBuffer a1, FloatBuffer b1, FloatBuffer a3, FloatBuffer b3, FloatBuffer a2, FloatBuffer b2);

    /** x [T, D] → out [T, D], keeping what {@link #backward} needs. */
    void forward(Plan plan, FloatBuffer x, FloatBuffer out);

    /** After {@link #forward}: dOut [T, D] → dx [T, D] and the gradients. */
    void backward(FloatBuffer dOut, FloatBuffer dx, Gradients into);

    /** Frees what the layer holds (its device memory). */
    @Override
    void close();
}
