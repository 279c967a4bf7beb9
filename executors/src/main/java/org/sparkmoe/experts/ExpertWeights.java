package org.sparkmoe.experts;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The E SwiGLU experts of one MoE layer, stacked for the grouped GEMM, in Hugging Face's Linear layout.
 *
 * @param w1 gate projection [E, I, D] (Mixtral w1, Qwen2-MoE gate_proj)
 * @param w3 up projection [E, I, D] (Mixtral w3, Qwen2-MoE up_proj)
 * @param w2 down projection [E, D, I] (Mixtral w2, Qwen2-MoE down_proj)
 */
public record ExpertWeights(INDArray w1, INDArray w3, INDArray w2) {
    public ExpertWeights {
        long e = w1.size(0);
        long i = w1.size(1);
        long d = w1.size(2);
        if (w1.rank() != 3 || !java.util.Arrays.equals(w3.shape(), w1.shape())
                || w2.rank() != 3 || w2.size(0) != e || w2.size(1) != d || w2.size(2) != i) {
            throw new IllegalArgumentException("expert weights disagree: w1 " + w1.shapeInfoToString()
                    + ", w3 " + w3.shapeInfoToString() + ", w2 " + w2.shapeInfoToString());
        }
    }

    public int experts() {
        return (int) w1.size(0);
    }
}
