package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;

import java.util.List;

/**
 * What one forward pass over B sequences of S tokens returns (rows batch-major).
 *
 * @param logits        [B·S, V]
 * @param hiddenStates  L+1 arrays [B·S, D] as transformers reports them (embeddings, after each layer but
 *                      the last, then after the final norm), or empty when not requested
 * @param routerLogits  one [B·S, E] per MoE layer, in layer order, or empty when not requested
 * @param routerInputs  one [B·S, D] per MoE layer, in layer order: what the router and the experts read (the
 *                      post-attention RMSNorm output), or empty when not requested
 */
public record ForwardOutput(INDArray logits, List<INDArray> hiddenStates, List<INDArray> routerLogits,
                            List<INDArray> routerInputs) {
}
