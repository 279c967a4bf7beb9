package org.sparkmoe.experts;

/**
 * Gradients of {@link CpExperts}' factors, each in the shape of the factor it belongs to: dL/dU_N [E, R],
 * dL/dU_I [in, R], dL/dU_O [out, R] per projection.
 *
 * @param gate w1 / gate_proj
 * @param up   w3 / up_proj
 * @param down w2 / down_proj
 */
public record CpGradients(CpFactors gate, CpFactors up, CpFactors down) {
}
