package org.sparkmoe.experts;

/**
 * Gradients of {@link TrExperts}' cores, each in the shape of the core it belongs to: dL/dG_N [r1, E, r2],
 * dL/dG_I [r2, in, r3], dL/dG_O [r3, out, r1] per projection (with their matrix layouts, {@link TrFactors}).
 *
 * @param gate w1 / gate_proj
 * @param up   w3 / up_proj
 * @param down w2 / down_proj
 */
public record TrGradients(TrFactors gate, TrFactors up, TrFactors down) {
}
