package org.sparkmoe.experts;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Gradients of one backward pass of an {@link ExpertFfn}; the LoRA gradients of a projection without LoRA are
 * null, and so are the CP factors' (TR cores') gradients of experts that are not in CP (TR) form.
 *
 * @param dx       [T, D] through the experts (not through the router)
 * @param dWeights [T·K] dL/dg per (token, slot) pair: what the routing backward pass takes
 * @param gate     w1 / gate_proj
 * @param up       w3 / up_proj
 * @param down     w2 / down_proj
 * @param cp       {@link CpExperts}' factors' gradients, else null
 * @param tr       {@link TrExperts}' cores' gradients, else null
 */
public record ExpertGradients(INDArray dx, double[] dWeights, LoraGradients gate, LoraGradients up,
                              LoraGradients down, CpGradients cp, TrGradients tr) {
    /** Gradients without CP factors or TR cores (full or low-rank experts). */
    public ExpertGradients(INDArray dx, double[] dWeights, LoraGradients gate, LoraGradients up, LoraGradients down) {
        this(dx, dWeights, gate, up, down, null, null);
    }
}
