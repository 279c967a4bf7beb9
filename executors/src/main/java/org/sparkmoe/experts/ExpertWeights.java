package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.WeightStack;

/**
 * The E SwiGLU experts of one MoE layer for the grouped GEMM, in Hugging Face's Linear layout, in their stored type
 * (memory-mapped bf16/fp16/fp32 from a checkpoint, or arrays built in memory).
 *
 * @param w1 gate projection [E, I, D] (Mixtral w1, Qwen2-MoE gate_proj)
 * @param w3 up projection [E, I, D] (Mixtral w3, Qwen2-MoE up_proj)
 * @param w2 down projection [E, D, I] (Mixtral w2, Qwen2-MoE down_proj)
 */
public record ExpertWeights(WeightStack w1, WeightStack w3, WeightStack w2) {
    public ExpertWeights {
        int e = w1.groups();
        long i = w1.rows();
        long d = w1.cols();
        if (w3.groups() != e || w3.rows() != i || w3.cols() != d || w2.groups() != e || w2.rows() != d
                || w2.cols() != i || w3.dataType() != w1.dataType() || w2.dataType() != w1.dataType()) {
            throw new IllegalArgumentException("expert weights disagree: w1 " + w1 + ", w3 " + w3 + ", w2 " + w2);
        }
    }

    /** Stacked arrays w1 [E, I, D], w3 [E, I, D], w2 [E, D, I], used where they lie. */
    public ExpertWeights(INDArray w1, INDArray w3, INDArray w2) {
        this(WeightStack.of(w1), WeightStack.of(w3), WeightStack.of(w2));
    }

    public int experts() {
        return w1.groups();
    }

    /** I. */
    public int intermediate() {
        return (int) w1.rows();
    }

    /** D. */
    public int hidden() {
        return (int) w1.cols();
    }

    /** The type the experts compute in: DOUBLE for DOUBLE weights, else FLOAT. */
    public DataType computeType() {
        return w1.computeType();
    }
}
