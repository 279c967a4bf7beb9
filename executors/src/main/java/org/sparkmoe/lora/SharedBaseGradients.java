package org.sparkmoe.lora;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Gradients of a loss with respect to everything a shared-base MoLoRA FFN reads except the frozen base:
 * the adapters of the three projections, the router gate and the input. Shapes as the tensors they belong to.
 *
 * @param a1    [E, R, D]
 * @param b1    [E, I, R]
 * @param a3    [E, R, D]
 * @param b3    [E, I, R]
 * @param a2    [E, R, I]
 * @param b2    [E, D, R]
 * @param gate  [E, D] (through the softmax of the selected experts and, when on, the top-k renormalisation;
 *              the routing decision itself is constant)
 * @param input [T, D] (through the base FFN, the LoRA experts and the router)
 */
public record SharedBaseGradients(INDArray a1, INDArray b1, INDArray a3, INDArray b3, INDArray a2, INDArray b2,
        INDArray gate, INDArray input) {
}
