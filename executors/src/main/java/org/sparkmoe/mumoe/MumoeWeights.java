package org.sparkmoe.mumoe;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/** The parameters of a μMoE layer in factorised form: the gates of each level and the expert factors or cores. */
public interface MumoeWeights {
    /** I, the size of a token's input. */
    long inputSize();

    /** O, the size of a token's output. */
    long outputSize();

    /** [N_1, ..., N_L]: the experts of each level; N = Π N_l experts in all. */
    long[] expertDims();

    /** name → tensor, in a fixed order; {@link MumoeGradients#parameters()} has the same names and shapes. */
    Map<String, INDArray> parameters();

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
