package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import java.util.function.DoubleSupplier;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Central finite differences in float64: for every element θ_i of a tensor, (L(θ_i + h) − L(θ_i − h)) / 2h
 * against the analytic gradient g_i, with h = 1e-6. The error is relative with an absolute floor,
 * |numeric − g_i| / max(1, |g_i|) ≤ 1e-6: relative for gradients above 1, absolute below (the central
 * difference's own error is about h²·|L'''| + ε·|L|/h ≈ 1e-10 here, so 1e-6 leaves room only for real bugs).
 */
public final class GradientCheck {
    public static final double H = 1e-6;
    public static final double TOLERANCE = 1e-6;

    private GradientCheck() {
    }

    /**
     * Perturbs {@code param} in place (restoring every element) and compares with {@code analytic}.
     *
     * @return the worst error seen
     */
    public static double check(String name, INDArray param, INDArray analytic, DoubleSupplier loss) {
        assertEquals(DataType.DOUBLE, param.dataType(), name + ": gradient checks run in float64 only");
        assertArrayEquals(param.shape(), analytic.shape(), name + ": gradient shape");
        double worst = 0;
        double largest = 0;
        for (long i = 0; i < param.length(); i++) {
            double numeric = centralDifference(param, i, H, loss);
            double g = analytic.getDouble(i);
            double error = Math.abs(numeric - g) / Math.max(1.0, Math.abs(g));
            long at = i;
            assertTrue(error <= TOLERANCE, () -> name + "[" + at + "]: analytic " + g + ", numeric " + numeric
                    + ", error " + error + " > " + TOLERANCE);
            worst = Math.max(worst, error);
            largest = Math.max(largest, Math.abs(g));
        }
        assertTrue(largest > 1e-3, name + ": the gradient is (near) zero everywhere, the check would prove nothing");
        System.out.printf("gradient check %-28s worst error %.3e (largest |g| %.3f)%n", name, worst, largest);
        return worst;
    }

    /**
     * (L(θ_i + h) − L(θ_i − h)) / 2h for element {@code i} of {@code param}, stepped in place and restored: the one
     * central difference every gradient check over an array takes.
     */
    public static double centralDifference(INDArray param, long i, double h, DoubleSupplier loss) {
        double original = param.getDouble(i);
        param.putScalar(i, original + h);
        double plus = loss.getAsDouble();
        param.putScalar(i, original - h);
        double minus = loss.getAsDouble();
        param.putScalar(i, original);
        return (plus - minus) / (2 * h);
    }

    /** Σ out ⊙ weights: a scalar loss whose gradient with respect to out is {@code weights}. */
    public static double dot(INDArray out, INDArray weights) {
        return out.castTo(DataType.DOUBLE).mul(weights.castTo(DataType.DOUBLE)).sumNumber().doubleValue();
    }

    /** Gaussian·scale values, 'c' order, of the given type. */
    public static INDArray gaussian(Random rnd, DataType dataType, double scale, long... shape) {
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        double[] v = new double[(int) n];
        for (int i = 0; i < v.length; i++) {
            v[i] = rnd.nextGaussian() * scale;
        }
        INDArray a = Nd4j.create(v, shape, 'c');
        return dataType == DataType.DOUBLE ? a : a.castTo(dataType);
    }

    /**
     * Asserts ‖actual − expected‖₂ / ‖expected‖₂ below {@code tolerance} (same shape; an all-zero expected value fails:
     * nothing would be compared).
     */
    public static void assertRelativeL2(INDArray expected, INDArray actual, double tolerance, String what) {
        org.junit.jupiter.api.Assertions.assertArrayEquals(expected.shape(), actual.shape(), what + " shape");
        double[] e = expected.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        double[] a = actual.castTo(DataType.DOUBLE).dup('c').data().asDouble();
        double diff = 0;
        double norm = 0;
        for (int k = 0; k < e.length; k++) {
            diff += (e[k] - a[k]) * (e[k] - a[k]);
            norm += e[k] * e[k];
        }
        org.junit.jupiter.api.Assertions.assertTrue(norm > 0, what + " is all zeros: nothing compared");
        org.junit.jupiter.api.Assertions.assertTrue(Math.sqrt(diff / norm) < tolerance,
                what + ": relative L2 error " + Math.sqrt(diff / norm));
    }
}
