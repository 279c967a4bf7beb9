package org.sparkmoe.mumoe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.GradientCheck;

/**
 * Float64 central differences ({@link GradientCheck}: h = 1e-6, |numeric − analytic| / max(1, |analytic|) ≤ 1e-6)
 * through whole entmax-1.5-gated μMoE layers, flat and hierarchical CP and TR, as {@link MumoeGradientCheckTest}
 * does for softmax. entmax-1.5 is smooth only while its support stays put, so x is scaled (×2) until the gates hold
 * exact zeros beside rows of two or more experts, and every perturbed forward asserts the support did not change.
 * Loss L = Σ y ⊙ P for a fixed random P, so dL/dy = P.
 */
class MumoeEntmaxGradientCheckTest {
    @ParameterizedTest(name = "{0}")
    @EnumSource(MumoeCases.class)
    void everyGradientMatchesCentralDifferences(MumoeCases c) {
        Object w = c.weights(DataType.DOUBLE);
        MumoeLayer layer = w instanceof CpWeights cp ? new CpMumoe(cp, GateActivation.ENTMAX15)
                : new TrMumoe((TrWeights) w, GateActivation.ENTMAX15);
        INDArray x = GradientCheck.gaussian(new Random(31), DataType.DOUBLE, 2.0, MumoeCases.T, MumoeCases.I);
        INDArray p = GradientCheck.gaussian(new Random(32), DataType.DOUBLE, 1.0, MumoeCases.T, MumoeCases.O);

        MumoePass pass = layer.forward(x);
        List<boolean[]> support = pass.gates().stream().map(MumoeEntmaxGradientCheckTest::support).toList();
        assertTrue(support.stream().anyMatch(s -> !allTrue(s)), c + ": no gate is 0 anywhere, the zeros go unchecked");
        assertTrue(pass.gates().stream().anyMatch(MumoeEntmaxGradientCheckTest::someRowMixes),
                c + ": every gate row is one-hot, the gate's gradient is 0 everywhere");
        MumoeGradients g = layer.backward(pass, p);
        java.util.function.DoubleSupplier loss = () -> {
            MumoePass f = layer.forward(x);
            for (int l = 0; l < support.size(); l++) {
                assertArrayEquals(support.get(l), support(f.gates().get(l)),
                        c + ": level " + l + "'s support changed under the step");
            }
            return GradientCheck.dot(f.y(), p);
        };
        for (Map.Entry<String, INDArray> e : layer.weights().parameters().entrySet()) {
            GradientCheck.check(c + " entmax15 " + e.getKey(), e.getValue(), g.parameters().get(e.getKey()), loss);
        }
        GradientCheck.check(c + " entmax15 x", x, g.dx(), loss);
    }

    /** a > 0 per element of a [T, N], row-major. */
    private static boolean[] support(INDArray a) {
        double[] v = a.dup('c').data().asDouble();
        boolean[] s = new boolean[v.length];
        for (int i = 0; i < v.length; i++) {
            s[i] = v[i] > 0;
        }
        return s;
    }

    private static boolean allTrue(boolean[] s) {
        for (boolean b : s) {
            if (!b) {
                return false;
            }
        }
        return true;
    }

    /** Whether some row of a [T, N] has two or more experts above 0. */
    private static boolean someRowMixes(INDArray a) {
        for (long t = 0; t < a.size(0); t++) {
            int kept = 0;
            for (long n = 0; n < a.size(1); n++) {
                kept += a.getDouble(t, n) > 0 ? 1 : 0;
            }
            if (kept > 1) {
                return true;
            }
        }
        return false;
    }
}
