package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.TensorSource;

/** Reads one projection of every expert of an MoE layer as a stack and combines stacks with per-expert weights. */
public final class ExpertStack {
    private ExpertStack() {
    }

    /** The E experts' [rows, cols] weights of projection p in decoder layer l, stacked [E, rows, cols], float32. */
    public static INDArray read(TensorSource source, CheckpointLayout layout, int layer, int experts, Projection p) {
        INDArray first = source.readFloat(layout.expert(layer, 0, p));
        INDArray stack = Nd4j.createUninitialized(first.dataType(), new long[] {experts, first.size(0), first.size(1)}, 'c');
        stack.slice(0).assign(first);
        for (int e = 1; e < experts; e++) {
            stack.slice(e).assign(source.readFloat(layout.expert(layer, e, p)));
        }
        return stack;
    }

    /** gpt-oss: the E experts' biases of projection p in layer l, stacked [E, 1, n], float32. */
    public static INDArray readBiases(TensorSource source, CheckpointLayout layout, int layer, int experts,
                                      Projection p) {
        INDArray first = source.readFloat(layout.expertBias(layer, 0, p));
        INDArray stack = Nd4j.createUninitialized(first.dataType(), new long[] {experts, 1, first.length()}, 'c');
        for (int e = 0; e < experts; e++) {
            stack.slice(e).assign((e == 0 ? first : source.readFloat(layout.expertBias(layer, e, p))).reshape(1, -1));
        }
        return stack;
    }

    /**
     * Σₑ wₑ·stack[e] accumulated in float64, returned in the stack's data type.
     *
     * @param stack   [E, rows, cols]
     * @param weights [E]
     * @return [rows, cols]
     */
    public static INDArray weightedSum(INDArray stack, double[] weights) {
        if (weights.length != stack.size(0)) {
            throw new IllegalArgumentException("weights for " + weights.length + " experts, stack of " + stack.size(0));
        }
        INDArray sum = Nd4j.zeros(DataType.DOUBLE, stack.size(1), stack.size(2));
        for (int e = 0; e < weights.length; e++) {
            if (weights[e] != 0) {
                sum.addi(stack.slice(e).castTo(DataType.DOUBLE).mul(weights[e]));
            }
        }
        return sum.castTo(stack.dataType());
    }
}
