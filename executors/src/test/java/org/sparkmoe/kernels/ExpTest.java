package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * {@link Exp}: the vector pass gives the scalar's bits (float64, and rounded to float32) for every input (ordinary, huge, tiny, subnormal results,
 * overflow, underflow, ±0, ±∞, NaN as a NaN), and both stay within 1 ulp of {@link Math#exp}.
 */
class ExpTest {

    private static double[] inputs() {
        Random rnd = new Random(21);
        double[] x = new double[400_004];
        int i = 0;
        for (double special : new double[] {0.0, -0.0, 1.0, -1.0, 709.78, 709.79, -708.4, -708.5, -744.0, -745.13,
                -745.2, -1000.0, 1000.0, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY, Double.NaN, 1e-300,
                -1e-300, Math.log(2) / 2, -Math.log(2) / 2, 708.0, -708.0, Math.nextUp(708.0), Math.nextDown(-708.0),
                707.7, -707.7, 1021.5 * Math.log(2), -1021.5 * Math.log(2)}) {
            x[i++] = special;
        }
        while (i < x.length) {
            x[i] = switch (i % 4) {
                case 0 -> 4 * rnd.nextGaussian();                     // SwiGLU's gate values
                case 1 -> 40 * rnd.nextGaussian();
                case 2 -> (rnd.nextDouble() - 0.5) * 1500;            // the whole range, over- and underflow too
                default -> (float) (8 * rnd.nextGaussian());          // float32 inputs
            };
            i++;
        }
        return x;
    }

    @Test
    void vectorLanesGiveTheScalarBits() {
        double[] x = inputs();
        for (boolean single : new boolean[] {false, true}) {
            double[] lanes = new double[x.length + 3];
            // from offset 1 into offset 3, a length that leaves a partial vector to the scalar tail
            Exp.expLanes(x, 1, lanes, 3, x.length - 2, single);
            for (int i = 1; i < x.length - 1; i++) {
                double scalar = Flat.round(Exp.exp(x[i]), single);
                assertEquals(Double.doubleToLongBits(scalar), Double.doubleToLongBits(lanes[i + 2]),
                        "x = " + x[i] + (single ? " (float32)" : "") + ": scalar " + scalar + ", vector "
                                + lanes[i + 2]);
            }
        }
    }

    @Test
    void inPlaceGivesTheSameBits() {
        double[] x = inputs();
        double[] copied = new double[x.length];
        Exp.expLanes(x, 0, copied, 0, x.length, true);
        Exp.expLanes(x, 0, x, 0, x.length, true);
        for (int i = 0; i < x.length; i++) {
            assertEquals(Double.doubleToLongBits(copied[i]), Double.doubleToLongBits(x[i]), "element " + i);
        }
    }

    @Test
    void withinOneUlpOfMathExp() {
        double[] x = inputs();
        long worst = 0;
        int differ = 0;
        for (double v : x) {
            double mine = Exp.exp(v);
            double ref = Math.exp(v);
            if (Double.isNaN(ref) || Double.isInfinite(ref) || ref == 0.0) {
                assertEquals(Double.doubleToLongBits(ref), Double.doubleToLongBits(mine), "x = " + v);
                continue;
            }
            long ulps = Math.abs(Double.doubleToRawLongBits(mine) - Double.doubleToRawLongBits(ref));
            differ += ulps == 0 ? 0 : 1;
            worst = Math.max(worst, ulps);
        }
        System.out.printf("Exp against Math.exp: %d of %d inputs differ, by at most %d ulp%n", differ, x.length,
                worst);
        assertTrue(worst <= 1, "worst " + worst + " ulp");
    }
}
