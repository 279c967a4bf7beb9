package org.sparkmoe.mumoe;

import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One forward pass: the input x [T, I], the output y [T, O], the gates a_l [T, N_l] (one per level), and named
 * intermediates that the implementation's backward pass reads (its own business; empty for the naive references).
 */
public record MumoePass(INDArray x, INDArray y, List<INDArray> gates, Map<String, INDArray> saved) {
    public MumoePass {
        gates = List.copyOf(gates);
        saved = Map.copyOf(saved);
    }

    public long tokens() {
        return x.size(0);
    }
}
