package org.sparkmoe.mumoe;

import java.util.Map;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.GradientCheck;

/**
 * Float64 central differences ({@link GradientCheck}: h = 1e-6, |numeric − analytic| / max(1, |analytic|) ≤ 1e-6)
 * for every element of every parameter (each gate, each factor or core) and of x, for flat and hierarchical CP and
 * TR, fast and naive. Loss L = Σ y ⊙ P for a fixed random P, so dL/dy = P.
 */
class MumoeGradientCheckTest {
    @ParameterizedTest(name = "{0} {1}")
    @CsvSource({"CP, fast", "CP, naive", "CP_HIERARCHICAL, fast", "CP_HIERARCHICAL, naive", "TR, fast",
            "TR, naive", "TR_HIERARCHICAL, fast", "TR_HIERARCHICAL, naive"})
    void everyGradientMatchesCentralDifferences(MumoeCases c, String which) {
        Object w = c.weights(DataType.DOUBLE);
        MumoeLayer layer = which.equals("fast") ? c.fast(w) : c.naive(w);
        INDArray x = GradientCheck.gaussian(new Random(31), DataType.DOUBLE, 1.0, MumoeCases.T, MumoeCases.I);
        INDArray p = GradientCheck.gaussian(new Random(32), DataType.DOUBLE, 1.0, MumoeCases.T, MumoeCases.O);

        MumoeGradients g = layer.backward(layer.forward(x), p);
        for (Map.Entry<String, INDArray> e : layer.weights().parameters().entrySet()) {
            GradientCheck.check(c + " " + which + " " + e.getKey(), e.getValue(), g.parameters().get(e.getKey()),
                    () -> GradientCheck.dot(layer.forward(x).y(), p));
        }
        GradientCheck.check(c + " " + which + " x", x, g.dx(), () -> GradientCheck.dot(layer.forward(x).y(), p));
    }
}
