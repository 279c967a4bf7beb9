package org.sparkmoe.driver.layerwise;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;

/**
 * A chunk half-way through an MoE layer of a layer-sequential pass with expert groups: the attention half's output
 * h = x + attn(norm1(x)) and what the MoE block reads, n = norm2(h), both [B·S, D] exact float32.
 */
public final class AttendedChunk {
    final HiddenChunk chunk;  // its windows (the hidden states are h)
    final float[] normed;     // [B·S, D]

    AttendedChunk(HiddenChunk chunk, float[] normed) {
        this.chunk = chunk;
        this.normed = normed;
    }

    /** The chunk, its hidden states h. */
    public HiddenChunk chunk() {
        return chunk;
    }

    /** @return norm2(h) [B·S, D], what the MoE block (its router and experts) reads */
    public INDArray normed() {
        int tokens = chunk.tokens();
        return Flat.array(normed, new long[] {tokens, normed.length / tokens});
    }
}
