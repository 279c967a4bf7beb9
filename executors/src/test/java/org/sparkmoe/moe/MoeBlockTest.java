package org.sparkmoe.moe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.SharedExpert;
import org.sparkmoe.experts.SwiGluMlp;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;

/**
 * {@link MoeBlock}'s inference pass against a naive float64 per-token reference written from transformers'
 * MixtralSparseMoeBlock / Qwen2MoeSparseMoeBlock: for each token, logits = x·Wgᵀ, softmax over E,
 * top-K (ties → lower index), renormalise when asked, y = Σ_k w_k · W2_e(silu(W1_e x) ⊙ W3_e x), plus
 * sigmoid(x·Wsgᵀ) · shared_expert(x) for Qwen2-MoE. Error = max |actual − ref| / max |ref| over [T, D].
 */
class MoeBlockTest {

    private static final int E = 4;
    private static final int D = 8;
    private static final int I = 6;
    private static final int T = 10;
    private static final int S = 5; // shared expert intermediate
    private static final double TOLERANCE = 1e-5;

    /** All weights of one block as flat float arrays in Hugging Face layout. */
    private static final class Weights {
        float[] gate;       // [E, D]
        float[] w1;         // [E, I, D]
        float[] w3;         // [E, I, D]
        float[] w2;         // [E, D, I]
        float[] sharedGate; // [S, D] (gate_proj), null without shared expert
        float[] sharedUp;   // [S, D]
        float[] sharedDown; // [D, S]
        float[] sharedExpertGate; // [1, D]
    }

    private static float[] gaussian(Random rnd, int n, double scale) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) (rnd.nextGaussian() * scale);
        }
        return a;
    }

    private static Weights weights(Random rnd, boolean shared) {
        Weights w = new Weights();
        w.gate = gaussian(rnd, E * D, 0.5);
        w.w1 = gaussian(rnd, E * I * D, 0.4);
        w.w3 = gaussian(rnd, E * I * D, 0.4);
        w.w2 = gaussian(rnd, E * D * I, 0.4);
        if (shared) {
            w.sharedGate = gaussian(rnd, S * D, 0.4);
            w.sharedUp = gaussian(rnd, S * D, 0.4);
            w.sharedDown = gaussian(rnd, D * S, 0.4);
            w.sharedExpertGate = gaussian(rnd, D, 0.5);
        }
        return w;
    }

    private static MoeBlock block(Weights w, boolean normalize) {
        Router router = new Router(Nd4j.create(w.gate, new long[] {E, D}, 'c'));
        ExpertWeights experts = new ExpertWeights(
                Nd4j.create(w.w1, new long[] {E, I, D}, 'c'),
                Nd4j.create(w.w3, new long[] {E, I, D}, 'c'),
                Nd4j.create(w.w2, new long[] {E, D, I}, 'c'));
        SharedExpert shared = null;
        if (w.sharedGate != null) {
            shared = new SharedExpert(new SwiGluMlp(Nd4j.create(w.sharedGate, new long[] {S, D}, 'c'),
                    Nd4j.create(w.sharedUp, new long[] {S, D}, 'c'),
                    Nd4j.create(w.sharedDown, new long[] {D, S}, 'c')),
                    Nd4j.create(w.sharedExpertGate, new long[] {1, D}, 'c'));
        }
        return new MoeBlock(router, RouterOptions.of(RoutingRule.softmaxTopK(2, normalize)),
                new FullExperts(experts, new Nd4jGroupedGemm()), shared);
    }

    /** out [rows] = m [rows, cols] (at offset) · v [cols], float64. */
    private static double[] matVec(float[] m, int at, int rows, int cols, double[] v) {
        double[] out = new double[rows];
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int c = 0; c < cols; c++) {
                s += (double) m[at + r * cols + c] * v[c];
            }
            out[r] = s;
        }
        return out;
    }

    private static double silu(double z) {
        return z / (1.0 + Math.exp(-z));
    }

    /** SwiGLU MLP in float64: down · (silu(gate · x) ⊙ (up · x)). */
    private static double[] swiGlu(float[] gate, float[] up, float[] down, int at, int atDown, int inter,
                                   double[] x) {
        double[] g = matVec(gate, at, inter, D, x);
        double[] u = matVec(up, at, inter, D, x);
        double[] a = new double[inter];
        for (int i = 0; i < inter; i++) {
            a[i] = silu(g[i]) * u[i];
        }
        return matVec(down, atDown, D, inter, a);
    }

    /** The reference [T, D] in float64; also returns the chosen experts through {@code chosen} [T, K]. */
    private static double[] reference(Weights w, float[] x, int tokens, int topK, boolean normalize, int[] chosen) {
        double[] out = new double[tokens * D];
        for (int t = 0; t < tokens; t++) {
            double[] xt = new double[D];
            for (int d = 0; d < D; d++) {
                xt[d] = x[t * D + d];
            }
            double[] logits = matVec(w.gate, 0, E, D, xt);
            double max = Double.NEGATIVE_INFINITY;
            for (double l : logits) {
                max = Math.max(max, l);
            }
            double[] p = new double[E];
            double sum = 0;
            for (int e = 0; e < E; e++) {
                p[e] = Math.exp(logits[e] - max);
                sum += p[e];
            }
            for (int e = 0; e < E; e++) {
                p[e] /= sum;
            }
            boolean[] taken = new boolean[E];
            int[] sel = new int[topK];
            double[] wt = new double[topK];
            double selSum = 0;
            for (int k = 0; k < topK; k++) {
                int best = -1;
                for (int e = 0; e < E; e++) {
                    if (!taken[e] && (best < 0 || p[e] > p[best])) {
                        best = e;
                    }
                }
                taken[best] = true;
                sel[k] = best;
                wt[k] = p[best];
                selSum += p[best];
                chosen[t * topK + k] = best;
            }
            for (int k = 0; k < topK; k++) {
                double weight = normalize ? wt[k] / selSum : wt[k];
                double[] y = swiGlu(w.w1, w.w3, w.w2, sel[k] * I * D, sel[k] * D * I, I, xt);
                for (int d = 0; d < D; d++) {
                    out[t * D + d] += weight * y[d];
                }
            }
            if (w.sharedGate != null) {
                double gateLogit = matVec(w.sharedExpertGate, 0, 1, D, xt)[0];
                double gate = 1.0 / (1.0 + Math.exp(-gateLogit));
                double[] y = swiGlu(w.sharedGate, w.sharedUp, w.sharedDown, 0, 0, S, xt);
                for (int d = 0; d < D; d++) {
                    out[t * D + d] += gate * y[d];
                }
            }
        }
        return out;
    }

    private static void assertClose(double[] expected, INDArray actual, String what) {
        assertArrayEquals(new long[] {expected.length / D, D}, actual.shape(), what + " shape");
        float[] a = actual.dup('c').data().asFloat();
        double maxRef = 0;
        double maxDiff = 0;
        for (int i = 0; i < expected.length; i++) {
            maxRef = Math.max(maxRef, Math.abs(expected[i]));
            maxDiff = Math.max(maxDiff, Math.abs(a[i] - expected[i]));
        }
        assertTrue(maxRef > 1e-3, what + ": reference output is (near) zero, the test would prove nothing");
        double rel = maxDiff / maxRef;
        assertTrue(rel <= TOLERANCE, what + ": relative error " + rel + " > " + TOLERANCE);
    }

    private static void checkBlock(long seed, boolean shared, boolean normalize, int topK) {
        Random rnd = new Random(seed);
        Weights w = weights(rnd, shared);
        float[] x = gaussian(rnd, T * D, 1.0);
        MoeBlock.Output out = block(w, normalize).forward(Nd4j.create(x, new long[] {T, D}, 'c'), topK);
        int[] chosen = new int[T * topK];
        assertClose(reference(w, x, T, topK, normalize, chosen), out.hidden(),
                "shared=" + shared + " normalize=" + normalize + " K=" + topK);
        assertArrayEquals(new long[] {T, E}, out.routerLogits().shape());
        float[] logits = out.routerLogits().dup('c').data().asFloat();
        for (int t = 0; t < T; t++) {
            double[] xt = new double[D];
            for (int d = 0; d < D; d++) {
                xt[d] = x[t * D + d];
            }
            double[] ref = matVec(w.gate, 0, E, D, xt);
            for (int e = 0; e < E; e++) {
                assertEquals(ref[e], logits[t * E + e], 1e-5, "router logit [" + t + ", " + e + "]");
            }
        }
    }

    @Test
    void mixtralStyleTopTwo() {
        checkBlock(11, false, true, 2);
    }

    @Test
    void qwenStyleWithoutRenormalisation() {
        checkBlock(12, false, false, 2);
    }

    @Test
    void withSigmoidGatedSharedExpert() {
        checkBlock(13, true, false, 2);
    }

    @Test
    void withSharedExpertAndRenormalisation() {
        checkBlock(14, true, true, 2);
    }

    @Test
    void kEqualsE() {
        checkBlock(15, false, true, E);
        checkBlock(16, true, false, E);
    }

    @Test
    void topOne() {
        checkBlock(17, false, true, 1);
    }

    /** Router row 2 is large and positive and x is positive, so every token's top expert is 2. */
    @Test
    void everyTokenRoutedToOneExpert() {
        Random rnd = new Random(18);
        Weights w = weights(rnd, false);
        for (int d = 0; d < D; d++) {
            w.gate[2 * D + d] = 5.0f;
        }
        float[] x = gaussian(rnd, T * D, 1.0);
        for (int i = 0; i < x.length; i++) {
            x[i] = Math.abs(x[i]) + 0.1f;
        }
        for (boolean normalize : new boolean[] {true, false}) {
            for (int topK : new int[] {1, 2}) {
                int[] chosen = new int[T * topK];
                double[] ref = reference(w, x, T, topK, normalize, chosen);
                for (int t = 0; t < T; t++) {
                    assertEquals(2, chosen[t * topK], "premise: token " + t + " routes first to expert 2");
                }
                MoeBlock.Output out = block(w, normalize).forward(Nd4j.create(x, new long[] {T, D}, 'c'), topK);
                assertClose(ref, out.hidden(), "dominant expert, normalize=" + normalize + " K=" + topK);
            }
        }
    }

    /** A row-range view as input (what a caller slicing a batch would pass) gives the same result. */
    @Test
    void viewInputMatchesContiguousInput() {
        Random rnd = new Random(19);
        Weights w = weights(rnd, true);
        float[] big = gaussian(rnd, (T + 3) * D, 1.0);
        INDArray all = Nd4j.create(big, new long[] {T + 3, D}, 'c');
        INDArray view = all.get(NDArrayIndex.interval(2, 2 + T), NDArrayIndex.all()); // [T, D]
        float[] x = new float[T * D];
        System.arraycopy(big, 2 * D, x, 0, T * D);
        int[] chosen = new int[T * 2];
        double[] ref = reference(w, x, T, 2, true, chosen);
        assertClose(ref, block(w, true).forward(view, 2).hidden(), "row-range view input");
        assertClose(ref, block(w, true).forward(view.dup('f'), 2).hidden(), "'f'-order input");
    }

    @Test
    void singleToken() {
        Random rnd = new Random(20);
        Weights w = weights(rnd, true);
        float[] x = gaussian(rnd, D, 1.0);
        int[] chosen = new int[2];
        double[] ref = reference(w, x, 1, 2, true, chosen);
        assertClose(ref, block(w, true).forward(Nd4j.create(x, new long[] {1, D}, 'c'), 2).hidden(), "one token");
    }
}
