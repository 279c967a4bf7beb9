package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * {@link VectorRows} against its scalar loops, element by element with the same bits, on rows whose length leaves a
 * partial last vector, float32-valued and not, at an offset into the accumulator; the float copies against casts.
 */
class VectorRowsTest {
    private static final int[] LENGTHS = {0, 1, 3, 4, 5, 64, 511, 4099};

    private static double[] random(Random rnd, int n, boolean single) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            double x = rnd.nextGaussian() * Math.pow(10, rnd.nextInt(9) - 4);
            v[i] = single ? (float) x : x;
        }
        return v;
    }

    private static void assertSameBits(double[] expected, double[] actual, String what) {
        assertEquals(expected.length, actual.length, what);
        for (int i = 0; i < expected.length; i++) {
            assertEquals(Double.doubleToLongBits(expected[i]), Double.doubleToLongBits(actual[i]),
                    what + " at " + i + ": " + expected[i] + " vs " + actual[i]);
        }
    }

    @Test
    void addScaledGivesTheScalarBits() {
        Random rnd = new Random(1);
        for (boolean single : new boolean[] {true, false}) {
            for (int n : LENGTHS) {
                double[] y = random(rnd, n, single);
                double[] acc = random(rnd, n + 7, single);
                double[] reference = acc.clone();
                double g = rnd.nextDouble();                    // not a float32 value: the product is rounded
                VectorRows.addScaledLanes(acc, 7, g, y, n, single);
                VectorRows.addScaledScalar(reference, 7, g, y, 0, n, single);
                assertSameBits(reference, acc, "addScaled single=" + single + " n=" + n);
            }
        }
    }

    @Test
    void scaleAndAddGiveTheScalarBits() {
        Random rnd = new Random(2);
        for (int n : LENGTHS) {
            double[] x = random(rnd, n + 3, false);
            double[] out = new double[n];
            double[] reference = new double[n];
            double g = rnd.nextGaussian();
            VectorRows.scaleLanes(out, g, x, 3, n);
            VectorRows.scaleScalar(reference, g, x, 3, 0, n);
            assertSameBits(reference, out, "scale n=" + n);

            double[] acc = random(rnd, n + 5, false);
            double[] accReference = acc.clone();
            VectorRows.addLanes(acc, 5, out, n);
            VectorRows.addScalar(accReference, 5, out, 0, n);
            assertSameBits(accReference, acc, "add n=" + n);
        }
    }

    @Test
    void expShiftedGivesTheScalarBitsAndRoundsLikeAFloat32Loop() {
        Random rnd = new Random(4);
        for (boolean single : new boolean[] {true, false}) {
            for (int n : LENGTHS) {
                double[] x = random(rnd, n + 6, single);
                if (n > 2) {
                    x[6] = -1e6;                                    // e^x underflows to 0
                    x[7] = Double.NEGATIVE_INFINITY;                // a masked logit
                }
                double[] in = x.clone();
                double[] reference = x.clone();
                double scale = 0.125;
                VectorRows.expShiftedLanes(x, 6, n, scale, 2.5, single);
                VectorRows.expShiftedScalar(reference, 6, 0, n, scale, 2.5, single);
                assertSameBits(reference, x, "expShifted single=" + single + " n=" + n);
                for (int i = 6; i < 6 + n; i++) {                  // Exp is within 1 ulp of Math.exp
                    double expected = single ? (float) Math.exp((float) ((float) (in[i] * scale) - 2.5))
                            : Math.exp(in[i] * scale - 2.5);
                    double ulp = single ? Math.ulp((float) expected) : Math.ulp(expected);
                    assertTrue(x[i] == expected || Math.abs(x[i] - expected) <= ulp, "single=" + single + " at " + i + ": " + x[i]
                            + " vs Math.exp's " + expected);
                }
            }
        }
    }

    @Test
    void widenAndNarrowAreCasts() {
        Random rnd = new Random(3);
        for (int n : LENGTHS) {
            double[] d = random(rnd, n, false);
            if (n > 0) {
                d[n / 2] = Double.NaN;
            }
            float[] narrowed = new float[n];
            VectorRows.narrowLanes(d, narrowed, n);
            double[] widened = new double[n];
            VectorRows.widenLanes(narrowed, widened, n);
            for (int i = 0; i < n; i++) {
                assertEquals(Float.floatToIntBits((float) d[i]), Float.floatToIntBits(narrowed[i]), "narrow " + d[i]);
                assertEquals(Double.doubleToLongBits(narrowed[i]), Double.doubleToLongBits(widened[i]),
                        "widen " + narrowed[i]);
            }
        }
    }

    @Test
    void maxAndTheShiftedExpSumGiveTheScalarBits() {
        Random rnd = new Random(4);
        for (int n : LENGTHS) {
            float[] v = new float[n + 5];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) (rnd.nextGaussian() * 6);
            }
            double max = VectorRows.maxLanes(v, 5, n);
            assertEquals(Double.doubleToLongBits(VectorRows.maxScalar(v, 5, 0, n, Float.NEGATIVE_INFINITY)),
                    Double.doubleToLongBits(max), "max n=" + n);
            double shift = n == 0 ? 0 : max;
            double lanes = VectorRows.sumExpShiftedLanes(v, 5, n, shift, new double[n]);
            assertEquals(Double.doubleToLongBits(VectorRows.sumExpShiftedScalar(v, 5, n, shift)),
                    Double.doubleToLongBits(lanes), "sumExpShifted n=" + n);
            double exact = 0;
            for (int i = 0; i < n; i++) {
                exact += Math.exp(v[5 + i] - shift);
            }
            assertEquals(exact, lanes, 1e-15 * Math.max(1, n) * exact, "sumExpShifted against Math.exp, n=" + n);
        }
        float[] special = {-0.0f, 0.0f, Float.NEGATIVE_INFINITY, 3f, Float.NaN, 2f};
        assertEquals(Double.doubleToLongBits(0.0), Double.doubleToLongBits(VectorRows.maxLanes(special, 0, 3)),
                "+0 is the max of −0 and +0, as Math.max takes it");
        assertTrue(Double.isNaN(VectorRows.maxLanes(special, 0, 6)), "a NaN is the max");
        assertTrue(Double.isNaN(VectorRows.maxScalar(special, 0, 0, 6, Float.NEGATIVE_INFINITY)), "a NaN is the max");
        assertEquals(Double.NEGATIVE_INFINITY, VectorRows.maxLanes(special, 0, 0), "the max of no values");
    }

    @Test
    void theMaxOfDoublesGivesTheScalarBits() {
        Random rnd = new Random(5);
        for (int n : LENGTHS) {
            double[] v = new double[n + 3];
            for (int i = 0; i < v.length; i++) {
                v[i] = rnd.nextGaussian() * 6;
            }
            assertEquals(Double.doubleToLongBits(VectorRows.maxScalar(v, 3, 0, n, Double.NEGATIVE_INFINITY)),
                    Double.doubleToLongBits(VectorRows.maxLanes(v, 3, n)), "max n=" + n);
        }
        double[] signed = new double[19];
        java.util.Arrays.fill(signed, -0.0);
        signed[11] = 0.0;                                    // +0 in a lane of its own, past the first vector
        assertEquals(Double.doubleToLongBits(0.0), Double.doubleToLongBits(VectorRows.maxLanes(signed, 0, 16)),
                "+0 is the max of −0 and +0, as Math.max takes it");
        assertEquals(Double.doubleToLongBits(-0.0), Double.doubleToLongBits(VectorRows.maxLanes(signed, 0, 11)),
                "−0 is the max of −0s");
        double[] nan = {1, 2, 3, 4, 5, 6, 7, 8, 9, Double.NaN, -1, 30};
        assertTrue(Double.isNaN(VectorRows.maxLanes(nan, 0, nan.length)), "a NaN in a vector is the max");
        assertTrue(Double.isNaN(VectorRows.maxLanes(nan, 2, 8)), "a NaN in the scalar tail or a lane is the max");
        assertEquals(Double.NEGATIVE_INFINITY, VectorRows.maxLanes(nan, 0, 0), "the max of no values");
    }
}
