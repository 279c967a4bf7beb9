package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.GradientCheck;

/**
 * Blockwise attention against the whole-matrix definition it replaces: the output equals a full [S, S] causal
 * softmax (optionally windowed, with sinks, grouped-query) for block sizes that do and do not divide S; the gradients
 * of q, k, v and the sinks match float64 central differences with blocks of 3 queries × 5 keys on S = 11.
 */
class BlockAttentionTest {
    private static final int B = 2;
    private static final int H = 4;
    private static final int KVH = 2;
    private static final int S = 11;
    private static final int D = 4;   // q·k width
    private static final int DV = 3;  // value width
    private static final double SCALE = 0.7;

    @Test
    void outputMatchesTheWholeSoftmaxForEveryBlockSize() {
        Random rnd = new Random(1);
        INDArray q = gaussian(rnd, DataType.DOUBLE, 1.0, B * H, S, D);
        INDArray k = gaussian(rnd, DataType.DOUBLE, 1.0, B * KVH, S, D);
        INDArray v = gaussian(rnd, DataType.DOUBLE, 1.0, B * KVH, S, DV);
        double[] sinks = {0.3, -1.0, 2.0, 0.0};
        int[][] blocks = {{3, 5}, {5, 3}, {1, 1}, {11, 11}, {4, 64}, {64, 64}};
        for (Integer window : new Integer[] {null, 4, 1}) {
            for (double[] sink : new double[][] {null, sinks}) {
                double[] expected = wholeSoftmax(q, k, v, window, sink);
                for (int[] b : blocks) {
                    BlockAttention attn = new BlockAttention(SCALE, window, sink, b[0], b[1]);
                    double[] got = Flat.values(attn.forward(q, k, v, H, KVH).out());
                    String name = "window " + window + ", sinks " + (sink != null) + ", blocks " + b[0] + "×" + b[1];
                    assertClose(expected, got, 1e-13, name);
                }
            }
        }
    }

    @Test
    void float32OutputIsTheFloat64OneRounded() {
        Random rnd = new Random(2);
        INDArray q = gaussian(rnd, DataType.DOUBLE, 1.0, B * H, S, D);
        INDArray k = gaussian(rnd, DataType.DOUBLE, 1.0, B * KVH, S, D);
        INDArray v = gaussian(rnd, DataType.DOUBLE, 1.0, B * KVH, S, DV);
        BlockAttention attn = new BlockAttention(SCALE, 4, new double[] {0.3, -1.0, 2.0, 0.0}, 3, 5);
        double[] full = Flat.values(attn.forward(q, k, v, H, KVH).out());
        BlockAttention.Forward single = attn.forward(q.castTo(DataType.FLOAT), k.castTo(DataType.FLOAT),
                v.castTo(DataType.FLOAT), H, KVH);
        assertTrue(single.out().dataType() == DataType.FLOAT, "FLOAT in, FLOAT out");
        assertClose(full, Flat.values(single.out()), 2e-6, "float32 against float64");
    }

    @Test
    void gradientsMatchFiniteDifferencesWithBlocksThatDoNotDivideTheSequence() {
        for (Integer window : new Integer[] {null, 4}) {
            Random rnd = new Random(3);
            INDArray q = gaussian(rnd, DataType.DOUBLE, 1.0, B * H, S, D);
            INDArray k = gaussian(rnd, DataType.DOUBLE, 1.0, B * KVH, S, D);
            INDArray v = gaussian(rnd, DataType.DOUBLE, 1.0, B * KVH, S, DV);
            INDArray sinks = gaussian(rnd, DataType.DOUBLE, 1.0, H);
            INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, B * H, S, DV);
            BlockAttention attn = new BlockAttention(SCALE, window, Flat.values(sinks), 3, 5);
            BlockAttention.Gradients g = attn.backward(q, k, v, H, KVH, attn.forward(q, k, v, H, KVH), w);
            String name = "block attention window " + window;
            GradientCheck.check(name + ": q", q, g.dq(), () -> loss(attn, q, k, v, w));
            GradientCheck.check(name + ": k", k, g.dk(), () -> loss(attn, q, k, v, w));
            GradientCheck.check(name + ": v", v, g.dv(), () -> loss(attn, q, k, v, w));
            // the sinks are copied when an attention is built: every evaluation builds one from the perturbed values
            GradientCheck.check(name + ": sinks", sinks, Nd4j.create(g.dSinks()), () -> loss(
                    new BlockAttention(SCALE, window, Flat.values(sinks), 3, 5), q, k, v, w));
        }
    }

    private static double loss(BlockAttention attn, INDArray q, INDArray k, INDArray v, INDArray w) {
        return GradientCheck.dot(attn.forward(q, k, v, H, KVH).out(), w);
    }

    /** softmax([q·kᵀ·scale + mask, sink])[:-1]·v over whole [S, S] rows, as transformers' eager attention. */
    private static double[] wholeSoftmax(INDArray q, INDArray k, INDArray v, Integer window, double[] sinks) {
        double[] out = new double[B * H * S * DV];
        for (int bh = 0; bh < B * H; bh++) {
            int kv = bh / H * KVH + bh % H / (H / KVH);
            for (int i = 0; i < S; i++) {
                double[] z = new double[S];
                double max = sinks == null ? Double.NEGATIVE_INFINITY : sinks[bh % H];
                for (int j = 0; j < S; j++) {
                    boolean visible = j <= i && (window == null || j > i - window);
                    double dot = 0;
                    for (int c = 0; c < D; c++) {
                        dot += q.getDouble(bh, i, c) * k.getDouble(kv, j, c);
                    }
                    z[j] = visible ? dot * SCALE : Double.NEGATIVE_INFINITY;
                    max = Math.max(max, z[j]);
                }
                double sum = sinks == null ? 0 : Math.exp(sinks[bh % H] - max);
                for (int j = 0; j < S; j++) {
                    sum += Math.exp(z[j] - max);
                }
                for (int j = 0; j < S; j++) {
                    double p = Math.exp(z[j] - max) / sum;
                    for (int c = 0; c < DV; c++) {
                        out[(bh * S + i) * DV + c] += p * v.getDouble(kv, j, c);
                    }
                }
            }
        }
        return out;
    }

    private static void assertClose(double[] expected, double[] got, double tolerance, String name) {
        for (int i = 0; i < expected.length; i++) {
            double diff = Math.abs(expected[i] - got[i]);
            int at = i;
            assertTrue(diff <= tolerance * Math.max(1, Math.abs(expected[i])), () -> name + " [" + at + "]: expected "
                    + expected[at] + ", got " + got[at]);
        }
    }
}
