package org.sparkmoe.experts;

/**
 * Gradients of one projection's {@link LoraExperts}.
 *
 * @param dA [E, R, in]
 * @param dB [E, out, R]
 */
public record LoraGradients(org.nd4j.linalg.api.ndarray.INDArray dA, org.nd4j.linalg.api.ndarray.INDArray dB) {
}
