package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The SwiGLU element-wise kernel against plain per-element loops: the float32 forward rounds like
 * {@code (float) silu(x) * u}, the backward is computed in float64 and rounded once; the same bits on any number
 * of threads, for views as for fresh arrays, in FLOAT and DOUBLE; gpt-oss's clamped gate against a float32 loop
 * written as transformers' {@code _apply_gate} and its derivatives against float64 central differences. The
 * vectorised chunk methods against the scalar ones element by element (same bits), and float32 SwiGLU with
 * {@link Exp} against the same with {@link Math#exp} (the ulp difference measured).
 */
class ActivationsTest {

    /** [200, 1000]: large enough that 3 workers get 3 shares. */
    private static final int ROWS = 200;
    private static final int COLS = 1000;

    private static float[] random(long seed, int n, double scale) {
        Random rnd = new Random(seed);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) (scale * rnd.nextGaussian());
        }
        return a;
    }

    private static INDArray floats(float[] v) {
        return Nd4j.create(v, new long[] {ROWS, COLS}, 'c');
    }

    @Test
    void floatForwardMatchesAFloat32LoopOnAnyThreadCount() {
        float[] g = random(1, ROWS * COLS, 4);
        float[] u = random(2, ROWS * COLS, 1);
        float[] expected = new float[g.length];
        for (int i = 0; i < g.length; i++) {
            expected[i] = (float) (g[i] / (1.0 + Math.exp(-g[i]))) * u[i];
        }
        for (int threads : new int[] {1, 2, 3}) {
            INDArray act = Activations.swiGlu(floats(g), floats(u), new Workers(threads));
            assertArrayEquals(expected, act.data().asFloat(), 0f, threads + " threads");
        }
    }

    @Test
    void clampedGateMatchesTransformersFloat32Steps() {
        float[] g = random(11, ROWS * COLS, 6);
        float[] u = random(12, ROWS * COLS, 6);
        float[] expected = new float[g.length];
        int clampedGate = 0;
        int clampedUp = 0;
        for (int i = 0; i < g.length; i++) {
            float gate = Math.min(g[i], 7f);                                     // gate.clamp(max=limit)
            float up = Math.max(-7f, Math.min(u[i], 7f));                        // up.clamp(-limit, limit)
            float sig = (float) (1.0 / (1.0 + Math.exp(-(gate * 1.702f))));      // sigmoid(gate * alpha)
            float glu = gate * sig;
            expected[i] = (up + 1f) * glu;                                       // (up + 1) * glu
            clampedGate += g[i] > 7f ? 1 : 0;
            clampedUp += Math.abs(u[i]) > 7f ? 1 : 0;
        }
        assertTrue(clampedGate > 1000 && clampedUp > 1000, "both clamps act: " + clampedGate + ", " + clampedUp);
        for (int threads : new int[] {1, 3}) {
            INDArray act = Activations.gated(GatedActivation.CLAMPED_SWIGLU, floats(g), floats(u), new Workers(threads));
            assertArrayEquals(expected, act.data().asFloat(), 0f, threads + " threads");
        }
    }

    @Test
    void clampedGateDerivativesMatchFiniteDifferences() {
        double h = 1e-6;
        double[] points = {-9.0, -7.5, -3.2, -0.4, 0.0, 0.7, 2.5, 6.9, 7.3, 11.0};
        double[] worst = new double[1];
        double[] pair = new double[2];
        for (double z : points) {
            for (double u : points) {
                GatedActivation.CLAMPED_SWIGLU.backward(z, u, 1.0, pair, 0);
                double dz = (GatedActivation.CLAMPED_SWIGLU.forward(z + h, u, false)
                        - GatedActivation.CLAMPED_SWIGLU.forward(z - h, u, false)) / (2 * h);
                double du = (GatedActivation.CLAMPED_SWIGLU.forward(z, u + h, false)
                        - GatedActivation.CLAMPED_SWIGLU.forward(z, u - h, false)) / (2 * h);
                for (double[] c : new double[][] {{dz, pair[0]}, {du, pair[1]}}) {
                    double error = Math.abs(c[0] - c[1]) / Math.max(1.0, Math.abs(c[1]));
                    assertTrue(error <= 1e-6, "z " + z + ", u " + u + ": numeric " + c[0] + ", analytic " + c[1]);
                    worst[0] = Math.max(worst[0], error);
                }
            }
        }
        GatedActivation.CLAMPED_SWIGLU.backward(7.3, 11.0, 1.0, pair, 0);
        assertEquals(0.0, pair[0], 0.0, "a clamped gate passes no gradient");
        assertEquals(0.0, pair[1], 0.0, "a clamped up passes no gradient");
        System.out.printf("gradient check clamped gate: worst error %.3e%n", worst[0]);
    }

    @Test
    void backwardMatchesAFloat64LoopRoundedOnceOnAnyThreadCount() {
        float[] g = random(3, ROWS * COLS, 4);
        float[] u = random(4, ROWS * COLS, 1);
        float[] d = random(5, ROWS * COLS, 1);
        float[] dg = new float[g.length];
        float[] du = new float[g.length];
        for (int i = 0; i < g.length; i++) {
            double z = g[i];
            double di = d[i];
            double sig = 1.0 / (1.0 + Math.exp(-z));
            du[i] = (float) (di * z * sig);
            dg[i] = (float) (di * u[i] * sig * (1.0 + z * (1.0 - sig)));
        }
        for (int threads : new int[] {1, 2, 3}) {
            INDArray[] grads = Activations.swiGluBackward(floats(g), floats(u), floats(d), new Workers(threads));
            assertArrayEquals(dg, grads[0].data().asFloat(), 0f, threads + " threads, dh1");
            assertArrayEquals(du, grads[1].data().asFloat(), 0f, threads + " threads, dh3");
        }
    }

    @Test
    void doubleIsComputedWithoutRounding() {
        Random rnd = new Random(6);
        double[] g = new double[ROWS * COLS];
        double[] u = new double[ROWS * COLS];
        for (int i = 0; i < g.length; i++) {
            g[i] = 4 * rnd.nextGaussian();
            u[i] = rnd.nextGaussian();
        }
        double[] expected = new double[g.length];
        for (int i = 0; i < g.length; i++) {
            expected[i] = g[i] / (1.0 + Exp.exp(-g[i])) * u[i];        // float64 e^x: Exp's, not Math.exp's
        }
        INDArray act = Activations.swiGlu(Nd4j.create(g, new long[] {ROWS, COLS}, 'c'),
                Nd4j.create(u, new long[] {ROWS, COLS}, 'c'), new Workers(2));
        assertEquals(DataType.DOUBLE, act.dataType());
        assertArrayEquals(expected, act.data().asDouble(), 0.0);
    }

    /** Gate values over SwiGLU's range and past both ends of e^x; n = 4099 leaves a partial last vector. */
    private static double[][] chunkInputs(boolean single) {
        Random rnd = new Random(31);
        int n = 4099;
        double[][] v = new double[3][n + GatedActivation.LANE_MULTIPLE];
        for (int i = 0; i < n; i++) {
            double z = i % 50 == 0 ? 800 * (rnd.nextDouble() - 0.5) : 6 * rnd.nextGaussian();
            v[0][i] = single ? (float) z : z;
            v[1][i] = single ? (float) rnd.nextGaussian() : rnd.nextGaussian();
            v[2][i] = single ? (float) rnd.nextGaussian() : rnd.nextGaussian();
        }
        return v;
    }

    @Test
    void swiGluChunksGiveTheScalarBits() {
        int n = 4099;
        for (boolean single : new boolean[] {true, false}) {
            double[][] v = chunkInputs(single);
            double[] act = new double[v[0].length];
            double[] dz = new double[v[0].length];
            double[] du = new double[v[0].length];
            GatedActivation.SWIGLU.forwardLanes(v[0], v[1], act, n, single);
            GatedActivation.SWIGLU.backwardLanes(v[0], v[1], v[2], dz, du, n);
            double[] pair = new double[2];
            for (int i = 0; i < n; i++) {
                String at = (single ? "float32" : "float64") + " z = " + v[0][i] + ", u = " + v[1][i];
                assertEquals(GatedActivation.SWIGLU.forward(v[0][i], v[1][i], single), act[i], 0.0, at);
                GatedActivation.SWIGLU.backward(v[0][i], v[1][i], v[2][i], pair, 0);
                assertEquals(Double.doubleToLongBits(pair[0]), Double.doubleToLongBits(dz[i]), "dz, " + at);
                assertEquals(Double.doubleToLongBits(pair[1]), Double.doubleToLongBits(du[i]), "du, " + at);
            }
        }
    }

    @Test
    void float32SwiGluWithExpIsWithinOneUlpOfMathExp() {
        float[] g = random(41, 4_000_000, 4);
        float[] u = random(42, g.length, 1);
        float[] d = random(43, g.length, 1);
        INDArray[] shaped = {Nd4j.create(g, new long[] {4000, 1000}, 'c'), Nd4j.create(u, new long[] {4000, 1000}, 'c'),
            Nd4j.create(d, new long[] {4000, 1000}, 'c')};
        float[] act = Activations.swiGlu(shaped[0], shaped[1], new Workers(2)).data().asFloat();
        INDArray[] grads = Activations.swiGluBackward(shaped[0], shaped[1], shaped[2], new Workers(2));
        float[] dg = grads[0].data().asFloat();
        float[] du = grads[1].data().asFloat();
        int[] differ = new int[3];
        int worst = 0;
        for (int i = 0; i < g.length; i++) {
            double z = g[i];
            double di = d[i];
            double sig = 1.0 / (1.0 + Math.exp(-z));
            float[] mathExp = {(float) (z / (1.0 + Math.exp(-z))) * u[i],
                (float) (di * u[i] * sig * (1.0 + z * (1.0 - sig))), (float) (di * z * sig)};
            float[] mine = {act[i], dg[i], du[i]};
            for (int k = 0; k < 3; k++) {
                int ulps = Math.abs(Float.floatToIntBits(mine[k]) - Float.floatToIntBits(mathExp[k]));
                differ[k] += ulps == 0 ? 0 : 1;
                worst = Math.max(worst, ulps);
            }
        }
        System.out.printf("float32 SwiGLU, Exp vs Math.exp over %d elements: act %d, dh1 %d, dh3 %d differ;"
                + " at most %d ulp%n", g.length, differ[0], differ[1], differ[2], worst);
        assertTrue(worst <= 1, "worst " + worst + " ulp");
    }

    @Test
    void viewsGiveTheSameBitsAsTheirCopies() {
        INDArray big = Nd4j.create(random(7, 3 * ROWS * COLS, 4), new long[] {3 * ROWS, COLS}, 'c');
        INDArray rowsView = big.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(ROWS, 2 * ROWS),
                org.nd4j.linalg.indexing.NDArrayIndex.all());                  // offset view [ROWS, COLS]
        INDArray transposed = Nd4j.create(random(8, ROWS * COLS, 1), new long[] {COLS, ROWS}, 'c').transpose();
        Workers two = new Workers(2);
        INDArray fromViews = Activations.swiGlu(rowsView, transposed, two);
        INDArray fromCopies = Activations.swiGlu(rowsView.dup('c'), transposed.dup('c'), two);
        assertArrayEquals(fromCopies.data().asFloat(), fromViews.data().asFloat(), 0f);
        INDArray[] viewGrads = Activations.swiGluBackward(rowsView, transposed, transposed, two);
        INDArray[] copyGrads = Activations.swiGluBackward(rowsView.dup('c'), transposed.dup('c'), transposed.dup('c'),
                two);
        assertArrayEquals(copyGrads[0].data().asFloat(), viewGrads[0].data().asFloat(), 0f);
        assertArrayEquals(copyGrads[1].data().asFloat(), viewGrads[1].data().asFloat(), 0f);
    }

    @Test
    void emptyRowsGiveEmptyResults() {
        INDArray none = Nd4j.create(DataType.FLOAT, 0, 8);
        assertArrayEquals(new long[] {0, 8}, Activations.swiGlu(none, none, new Workers(2)).shape());
        assertArrayEquals(new long[] {0, 8}, Activations.swiGluBackward(none, none, none, new Workers(2))[0].shape());
    }

    @Test
    void mismatchedArraysAreNamed() {
        INDArray a = Nd4j.create(DataType.FLOAT, 2, 3);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Activations.swiGlu(a, Nd4j.create(DataType.DOUBLE, 2, 3), Workers.SERIAL));
        assertTrue(e.getMessage().contains("swiglu forward") && e.getMessage().contains("DOUBLE"), e.getMessage());
    }
}
