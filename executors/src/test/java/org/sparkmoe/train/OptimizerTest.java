package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/** AdamW, the warmup + cosine schedule and global-norm clipping against values derived by hand. */
class OptimizerTest {

    /**
     * θ0 = (1, −2), lr 0.1, β (0.9, 0.999), ε 1e-8, λ 0.01, gradients (0.5, −1), (0.1, 0.3), (−0.2, 0).
     * Step 1 by hand: θ·(1 − 0.001) = (0.999, −1.998); m = 0.1·g = (0.05, −0.1); v = 0.001·g² = (2.5e-4, 1e-3);
     * m/(1 − 0.9) = (0.5, −1), √(v/(1 − 0.999)) = (0.5, 1), so θ1 = (0.999 − 0.1·0.5/(0.5 + 1e-8),
     * −1.998 + 0.1·1/(1 + 1e-8)) = (0.899000002, −1.898000001). Step 2: m = (0.055, −0.06), v = (2.5975e-4,
     * 1.089e-3), bias corrections 0.19 and 0.001999. Steps 2 and 3 were evaluated with the same formulas in Python
     * floats (torch.optim.AdamW's single-tensor update, written out): θ2 = (0.8177969063826517,
     * −1.8533171424282264), θ3 = (0.7825437349271063, −1.8183910057075732), m3 = (0.0295, −0.054),
     * v3 = (2.994902500e-4, 1.087911e-3).
     */
    @Test
    void adamWMatchesHandDerivedUpdatesForThreeSteps() {
        TrainState state = single(new double[] {1.0, -2.0});
        AdamW adam = new AdamW(0.9, 0.999, 1e-8, 0.01);
        double[][] grads = {{0.5, -1.0}, {0.1, 0.3}, {-0.2, 0.0}};
        double[][] expected = {{0.899000002, -1.898000001}, {0.8177969063826517, -1.8533171424282264},
                {0.7825437349271063, -1.8183910057075732}};
        for (int t = 0; t < 3; t++) {
            LinkedHashMap<String, INDArray> g = new LinkedHashMap<>();
            g.put("p", Nd4j.create(grads[t], new long[] {2}, DataType.DOUBLE));
            adam.update(state, g, 0.1);
            assertEquals(t + 1, state.step());
            assertEquals(expected[t][0], state.params().get("p").getDouble(0), 1e-15, "step " + (t + 1));
            assertEquals(expected[t][1], state.params().get("p").getDouble(1), 1e-15, "step " + (t + 1));
        }
        assertEquals(0.0295, state.m().get("p").getDouble(0), 1e-15);
        assertEquals(-0.054, state.m().get("p").getDouble(1), 1e-15);
        assertEquals(2.9949025e-4, state.v().get("p").getDouble(0), 1e-17);
        assertEquals(1.087911e-3, state.v().get("p").getDouble(1), 1e-17);
    }

    /**
     * A step writes into the state's own arrays (no new native buffers) chunk by chunk, rounding to float32 as the
     * whole-array update would: a tensor of 2.5 chunks, its last chunk partial, against the double[] update.
     */
    @Test
    void adamWOverwritesTheStatesFloatArraysInPlaceChunkByChunk() {
        int n = AdamW.CHUNK * 5 / 2;
        float[] start = new float[n];
        float[] grad = new float[n];
        java.util.Random random = new java.util.Random(7);
        for (int i = 0; i < n; i++) {
            start[i] = (float) random.nextGaussian();
            grad[i] = (float) random.nextGaussian();
        }
        LinkedHashMap<String, INDArray> params = new LinkedHashMap<>();
        params.put("p", Nd4j.create(start, new long[] {n / 5, 5}));
        TrainState state = TrainState.fresh(params);
        INDArray p = state.params().get("p");
        INDArray m = state.m().get("p");
        INDArray v = state.v().get("p");
        AdamW adam = new AdamW(0.9, 0.999, 1e-8, 0.01);
        double[] theta = new double[n];
        double[] g = new double[n];
        for (int i = 0; i < n; i++) {
            theta[i] = start[i];
            g[i] = grad[i];
        }
        double[] mExpected = new double[n];
        double[] vExpected = new double[n];
        LinkedHashMap<String, INDArray> grads = new LinkedHashMap<>();
        grads.put("p", Nd4j.create(grad, new long[] {n / 5, 5}));
        for (int t = 1; t <= 2; t++) {
            adam.update(theta, g, mExpected, vExpected, t, 0.1);
            for (int i = 0; i < n; i++) {              // the state holds float32: round as it does between steps
                theta[i] = (float) theta[i];
                mExpected[i] = (float) mExpected[i];
                vExpected[i] = (float) vExpected[i];
            }
            adam.update(state, grads, 0.1);
        }
        assertSame(p, state.params().get("p"));
        assertSame(m, state.m().get("p"));
        assertSame(v, state.v().get("p"));
        float[] pAfter = p.data().asFloat();
        float[] mAfter = m.data().asFloat();
        float[] vAfter = v.data().asFloat();
        for (int i = 0; i < n; i++) {
            assertEquals((float) theta[i], pAfter[i], 0f, "θ " + i);
            assertEquals((float) mExpected[i], mAfter[i], 0f, "m " + i);
            assertEquals((float) vExpected[i], vAfter[i], 0f, "v " + i);
        }
    }

    /** peak 1e-3, warmup 2, total 6: λ = 0, ½, 1, ½(1 + cos π/4), ½, ½(1 − cos π/4), 0. */
    @Test
    void warmupThenCosineDecay() {
        LrSchedule s = new LrSchedule(1e-3, 2, 6);
        double c = Math.cos(Math.PI / 4);
        double[] expected = {0, 0.5e-3, 1e-3, 0.5e-3 * (1 + c), 0.5e-3, 0.5e-3 * (1 - c), 0};
        for (int step = 0; step < expected.length; step++) {
            assertEquals(expected[step], s.at(step), 1e-18, "step " + step);
        }
        assertEquals(1e-3, new LrSchedule(1e-3, 0, 4).at(0), 0.0, "no warmup: the first step has the peak rate");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new LrSchedule(1e-3, 5, 4));
        assertTrue(e.getMessage().contains("warmup 5, total 4"), e.getMessage());
    }

    /** Norms 5 (3, 4) and 12 → total 13; clipping to 1.3 scales by 1.3 / (13 + 1e-6); to 100 leaves all alone. */
    @Test
    void clippingUsesTheGlobalNorm() {
        LinkedHashMap<String, INDArray> g = grads();
        assertEquals(13.0, GradClip.clip(g, 1.3), 1e-12);
        double coef = 1.3 / (13 + 1e-6);
        assertEquals(3 * coef, g.get("a").getDouble(0), 1e-15);
        assertEquals(4 * coef, g.get("a").getDouble(1), 1e-15);
        assertEquals(12 * coef, g.get("b").getDouble(0), 1e-15);
        LinkedHashMap<String, INDArray> loose = grads();
        assertEquals(13.0, GradClip.clip(loose, 100), 1e-12);
        assertEquals(4.0, loose.get("a").getDouble(1), 0.0);
        assertEquals(13.0, GradClip.clip(grads(), Double.POSITIVE_INFINITY), 1e-12);
    }

    /**
     * Float32 gradients clipped in place chunk by chunk (a tensor of 2.5 chunks): the float64 norm of every element,
     * each product in float64 rounded once; a view is replaced by a scaled contiguous copy, its parent left alone.
     */
    @Test
    void clippingScalesFloatGradientsInPlaceChunkByChunk() {
        int n = AdamW.CHUNK * 5 / 2;
        float[] values = new float[n];
        java.util.Random random = new java.util.Random(11);
        double sq = 0;
        for (int i = 0; i < n; i++) {
            values[i] = (float) random.nextGaussian();
            sq += (double) values[i] * values[i];
        }
        INDArray parent = Nd4j.create(new float[] {1, 2, 3, 4, 5, 6}, new long[] {2, 3});
        INDArray column = parent.get(NDArrayIndex.all(), NDArrayIndex.point(2));             // [3, 6], stride 3
        double sqBig = sq;
        sq += 3 * 3 + 6 * 6;
        LinkedHashMap<String, INDArray> g = new LinkedHashMap<>();
        INDArray big = Nd4j.create(values, new long[] {n});
        g.put("big", big);
        g.put("column", column);
        assertEquals(Math.sqrt(sq), GradClip.clip(g, 1.0), 1e-9 * Math.sqrt(sq));
        double coef = GradClip.coefficient(GradClip.total(new double[] {sqBig, 45}), 1.0);
        assertSame(big, g.get("big"));
        float[] clipped = big.data().asFloat();
        for (int i = 0; i < n; i++) {
            assertEquals((float) (values[i] * coef), clipped[i], 0f, "element " + i);
        }
        assertEquals((float) (3 * coef), g.get("column").getFloat(0), 0f);
        assertEquals((float) (6 * coef), g.get("column").getFloat(1), 0f);
        assertEquals(3f, parent.getFloat(0, 2), 0f, "the view's parent is not the gradient");
    }

    private static LinkedHashMap<String, INDArray> grads() {
        LinkedHashMap<String, INDArray> g = new LinkedHashMap<>();
        g.put("a", Nd4j.create(new double[] {3, 4}, new long[] {2}, DataType.DOUBLE));
        g.put("b", Nd4j.create(new double[] {12}, new long[] {1}, DataType.DOUBLE));
        return g;
    }

    private static TrainState single(double[] values) {
        LinkedHashMap<String, INDArray> p = new LinkedHashMap<>();
        p.put("p", Nd4j.create(values, new long[] {values.length}, DataType.DOUBLE));
        return new TrainState(p, TrainState.zerosLike(p), TrainState.zerosLike(p), 0);
    }
}
