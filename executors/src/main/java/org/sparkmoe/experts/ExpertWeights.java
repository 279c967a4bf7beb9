package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.WeightStack;

/**
 * The E gated experts of one MoE layer for the grouped GEMM, in Hugging Face's Linear layout, in their stored type
 * (memory-mapped bf16/fp16/fp32 from a checkpoint, or arrays built in memory), with the gate function and, for
 * gpt-oss, a bias on every projection.
 *
 * @param w1         gate projection [E, I, D] (Mixtral w1, Qwen2-MoE gate_proj)
 * @param w3         up projection [E, I, D] (Mixtral w3, Qwen2-MoE up_proj)
 * @param w2         down projection [E, D, I] (Mixtral w2, Qwen2-MoE down_proj)
 * @param b1         gate bias [E, I] in the compute type, or null (all three or none)
 * @param b3         up bias [E, I], or null
 * @param b2         down bias [E, D], or null: added before the routing weight multiplies
 * @param activation act = f(h1, h3)
 */
public record ExpertWeights(WeightStack w1, WeightStack w3, WeightStack w2, INDArray b1, INDArray b3, INDArray b2,
                            GatedActivation activation) {
    public ExpertWeights {
        int e = w1.groups();
        long i = w1.rows();
        long d = w1.cols();
        if (w3.groups() != e || w3.rows() != i || w3.cols() != d || w2.groups() != e || w2.rows() != d
                || w2.cols() != i || w3.dataType() != w1.dataType() || w2.dataType() != w1.dataType()) {
            throw new IllegalArgumentException("expert weights disagree: w1 " + w1 + ", w3 " + w3 + ", w2 " + w2);
        }
        if ((b1 == null) != (b3 == null) || (b1 == null) != (b2 == null)) {
            throw new IllegalArgumentException("expert biases come all three (gate, up, down) or none");
        }
        DataType compute = w1.computeType();
        checkBias("b1 (gate bias)", b1, e, i, compute);
        checkBias("b3 (up bias)", b3, e, i, compute);
        checkBias("b2 (down bias)", b2, e, d, compute);
    }

    /** SwiGLU experts without biases. */
    public ExpertWeights(WeightStack w1, WeightStack w3, WeightStack w2) {
        this(w1, w3, w2, null, null, null, GatedActivation.SWIGLU);
    }

    /** Stacked arrays w1 [E, I, D], w3 [E, I, D], w2 [E, D, I], used where they lie; SwiGLU, no biases. */
    public ExpertWeights(INDArray w1, INDArray w3, INDArray w2) {
        this(WeightStack.of(w1), WeightStack.of(w3), WeightStack.of(w2));
    }

    private static void checkBias(String name, INDArray b, int e, long n, DataType compute) {
        if (b != null && (b.rank() != 2 || b.size(0) != e || b.size(1) != n || b.dataType() != compute)) {
            throw new IllegalArgumentException(name + " must be [" + e + ", " + n + "] " + compute + ", got "
                    + Arrays.toString(b.shape()) + " " + b.dataType());
        }
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

    /** Whether the projections carry biases (gpt-oss). */
    public boolean hasBiases() {
        return b1 != null;
    }

    /** The type the experts compute in: DOUBLE for DOUBLE weights, else FLOAT. */
    public DataType computeType() {
        return w1.computeType();
    }
}
