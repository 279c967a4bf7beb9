package org.sparkmoe.kernels;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Elementwise pieces of the SwiGLU FFN. */
public final class Activations {
    private Activations() {
    }

    /** silu(gate) ⊙ up, both [N, I] → new [N, I]; silu(x) = x·sigmoid(x) in float32. */
    public static INDArray swiGlu(INDArray gate, INDArray up) {
        float[] g = gate.dup('c').data().asFloat();
        float[] u = up.dup('c').data().asFloat();
        for (int i = 0; i < g.length; i++) {
            float x = g[i];
            g[i] = (float) (x / (1.0 + Math.exp(-x))) * u[i];
        }
        return Nd4j.create(g, gate.shape(), 'c');
    }
}
