package org.sparkmoe.mumoe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Comparator;
import java.util.Random;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * entmax-1.5's sort-based forward against a bisection reference: τ found by halving [max(z)/2 − 1, max(z)/2] until
 * Σ [z/2 − τ]₊² = 1 (the sum falls as τ rises, from ≥ 1 at the left end to 0 at the right), p = [z/2 − τ]₊².
 */
class Entmax15Test {
    /** Rows of 1 to 12 logits, Gaussian at scales 0.1 to 10 (near-uniform to one-hot). */
    @Test
    void matchesBisectionOnRandomRows() {
        Random rnd = new Random(41);
        int sparseRows = 0;
        for (int trial = 0; trial < 500; trial++) {
            int n = 1 + rnd.nextInt(12);
            double scale = Math.pow(10, -1 + 2 * rnd.nextDouble());
            double[] z = IntStream.range(0, n).mapToDouble(i -> rnd.nextGaussian() * scale).toArray();
            double[] p = entmax(z);
            double[] want = bisection(z);
            double sum = 0;
            for (int i = 0; i < n; i++) {
                assertTrue(p[i] >= 0, "entry " + i + " of " + Arrays.toString(p) + " is negative");
                assertEquals(want[i], p[i], 1e-12, "entry " + i + " of entmax15(" + Arrays.toString(z) + ")");
                sum += p[i];
            }
            assertEquals(1, sum, 1e-12, "Σ entmax15(" + Arrays.toString(z) + ")");
            sparseRows += Arrays.stream(p).anyMatch(v -> v == 0) ? 1 : 0;
        }
        assertTrue(sparseRows > 100, sparseRows + " of 500 rows have an exact zero; spread-out rows should");
    }

    /** z/2 spaced by 1: the top entry alone carries (0 − τ)² = 1 at τ = −1, which zeroes every other (≤ −1 − τ = 0). */
    @Test
    void spreadOutLogitsAreOneHot() {
        assertEquals(Arrays.toString(new double[] {0, 0, 1, 0}), Arrays.toString(entmax(new double[] {2, 0, 4, -2})));
    }

    /** Equal logits: uniform, as softmax. */
    @Test
    void equalLogitsAreUniform() {
        double[] p = entmax(new double[] {0.5, 0.5, 0.5, 0.5});
        for (double v : p) {
            assertEquals(0.25, v, 1e-15);
        }
    }

    /** The support is a prefix of softmax's order (largest logit first), and the weights fall along that order. */
    @Test
    void keepsSoftmaxsOrderAndItsSupportIsATopPrefix() {
        Random rnd = new Random(42);
        for (int trial = 0; trial < 200; trial++) {
            int n = 2 + rnd.nextInt(10);
            INDArray z = Nd4j.create(IntStream.range(0, n).mapToDouble(i -> rnd.nextGaussian() * 3).toArray(),
                    new long[] {1, n}, 'c');
            double[] soft = GateActivation.SOFTMAX.rows(z).data().asDouble();
            double[] sparse = GateActivation.ENTMAX15.rows(z).data().asDouble();
            Integer[] order = IntStream.range(0, n).boxed().sorted(Comparator.comparingDouble(i -> -soft[i]))
                    .toArray(Integer[]::new);
            for (int k = 1; k < n; k++) {
                double before = sparse[order[k - 1]];
                double here = sparse[order[k]];
                assertTrue(here <= before, "entmax15 breaks softmax's order at rank " + k + ": "
                        + Arrays.toString(sparse) + " vs " + Arrays.toString(soft));
                assertTrue(here == 0 || before > 0, "the support is not a prefix of softmax's order at rank " + k);
            }
        }
    }

    /** A FLOAT row is the float64 result rounded once to float32. */
    @Test
    void floatRowsRoundTheDoubleResultOnce() {
        Random rnd = new Random(43);
        float[] z = new float[7];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) (rnd.nextGaussian() * 2);
        }
        double[] widened = new double[z.length];
        for (int i = 0; i < z.length; i++) {
            widened[i] = z[i];
        }
        double[] p = entmax(widened);
        float[] got = GateActivation.ENTMAX15.rows(Nd4j.create(z, new long[] {1, z.length}, 'c')).data().asFloat();
        for (int i = 0; i < z.length; i++) {
            assertEquals((float) p[i], got[i], 0f, "entry " + i);
        }
    }

    private static double[] entmax(double[] z) {
        return GateActivation.ENTMAX15.rows(Nd4j.create(z, new long[] {1, z.length}, 'c')).data().asDouble();
    }

    private static double[] bisection(double[] z) {
        double max = Arrays.stream(z).max().orElseThrow() / 2;
        double lo = max - 1;
        double hi = max;
        for (int it = 0; it < 200; it++) {
            double mid = (lo + hi) / 2;
            double sum = 0;
            for (double v : z) {
                double s = Math.max(0, v / 2 - mid);
                sum += s * s;
            }
            if (sum >= 1) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        double tau = (lo + hi) / 2;
        return Arrays.stream(z).map(v -> Math.pow(Math.max(0, v / 2 - tau), 2)).toArray();
    }
}
