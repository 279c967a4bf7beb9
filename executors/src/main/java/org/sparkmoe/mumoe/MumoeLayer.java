package org.sparkmoe.mumoe;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A μMoE layer: y = Σₙ aₙ(x) · Wₙᵀx per token, with soft gates a = softmax(Gᵀx) over the N experts (one gate per
 * level of a hierarchy, the mixture weights being the outer product of the levels' gates), and W [N, I, O] held in
 * factorised form. Stateless between calls (no per-call scratch in fields), so one layer may serve several threads.
 */
public interface MumoeLayer {
    /** I, the size of a token's input. */
    long inputSize();

    /** O, the size of a token's output. */
    long outputSize();

    /** [N_1, ..., N_L]: the experts of each level; N = Π N_l experts in all. */
    long[] expertDims();

    /** name → tensor, in a fixed order; {@link MumoeGradients#parameters()} has the same names and shapes. */
    Map<String, INDArray> parameters();

    /** Forward over x [T, I]: y [T, O] and the gates a_l [T, N_l], plus what the backward pass needs. */
    MumoePass forward(INDArray x);

    /** Backward of {@link #forward}, given dL/dy [T, O]: dL/dθ for every parameter and dL/dx [T, I]. */
    MumoeGradients backward(MumoePass pass, INDArray dy);

    /** Every parameter: the factors and the gates. */
    default long parameterCount() {
        return parameters().values().stream().mapToLong(INDArray::length).sum();
    }

    /** The gate matrices' parameters, I·Σ N_l. */
    default long gateParameterCount() {
        long n = 0;
        for (long d : expertDims()) {
            n += d;
        }
        return inputSize() * n;
    }

    /** The experts' parameters as stored (the factors only): CP R·(Σ N_l + I + O), TR r1·N·r2 + r2·I·r3 + r3·O·r1. */
    default long expertParameterCount() {
        return parameterCount() - gateParameterCount();
    }

    /** What a materialised W would hold: Π N_l · I · O. */
    default long materialisedExpertParameterCount() {
        long n = inputSize() * outputSize();
        for (long d : expertDims()) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }
}
