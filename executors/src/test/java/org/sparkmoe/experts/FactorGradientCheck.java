package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.function.DoubleSupplier;
import java.util.function.IntFunction;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The element-by-element central differences {@link CpExpertsGradientCheckTest} and {@link TrExpertsGradientCheckTest}
 * share: every element of every parameter stepped by ±h in place, with the step and acceptance of
 * {@link LowRankGradientCheckTest} (|analytic − numeric| ≤ 1e-6 · max(|analytic|, |numeric|) or ≤ 1e-8).
 */
final class FactorGradientCheck {
    private FactorGradientCheck() {
    }

    /**
     * @param names  each parameter's name, for the messages
     * @param params the parameters, perturbed in place and restored
     * @param grads  their analytic gradients, in the parameters' shapes
     * @param loss   for parameter j, the loss at the parameters as they are now
     * @return how many elements had a gradient of at least 1e-4 (resolvable, not ~0)
     */
    static int check(String[] names, INDArray[] params, INDArray[] grads, IntFunction<DoubleSupplier> loss) {
        int checked = 0;
        for (int j = 0; j < params.length; j++) {
            INDArray param = params[j];
            INDArray grad = grads[j].dup('c');
            assertArrayEquals(param.shape(), grad.shape(), "d" + names[j] + " has its parameter's shape");
            DoubleSupplier l = loss.apply(j);
            for (long e = 0; e < param.length(); e++) {
                double numeric = GradientCheck.centralDifference(param, e, LowRankGradientCheckTest.STEP, l);
                double analytic = grad.getDouble(e);
                double err = Math.abs(analytic - numeric);
                double size = Math.max(Math.abs(analytic), Math.abs(numeric));
                assertTrue(err <= LowRankGradientCheckTest.RELATIVE * size
                        || err <= LowRankGradientCheckTest.ABSOLUTE_FLOOR, "d" + names[j] + "[" + e + "]: analytic "
                        + analytic + ", numeric " + numeric + ", |diff| " + err);
                checked += size >= 1e-4 ? 1 : 0;
            }
        }
        return checked;
    }
}
