package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.ops.transforms.Transforms;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.experts.SwiGluMlp;

/**
 * The factorised shared-base MoLoRA FFN against the naive per-token-weights reference (forward and backward),
 * both against central finite differences in float64, the B = 0 identity with the base FFN, and the memory
 * accounting. Small shapes: E=8, K=2, R=2, D=6, I=5, T=7.
 */
class LowRankExpertsTest {
    static final int E = 8;
    static final int K = 2;
    static final int R = 2;
    static final int D = 6;
    static final int I = 5;
    static final int T = 7;
    /** LoRA A and B drawn U(−0.6, 0.6) with scale 1.5, so the routed terms are as large as the base. */
    static final double LORA_BOUND = 0.6;
    static final double SCALE = 1.5;

    final LowRankExperts factorised = new LowRankFactorised(new Nd4jGroupedGemm());
    final LowRankExperts naive = new LowRankNaive();

    static INDArray input(DataType dt, long seed, int t) {
        return LowRankAdapters.uniform(new Random(seed), dt, 1.0, t, D);
    }

    static LowRankWeights weights(DataType dt, long seed, int k, boolean normalize) {
        return LowRankWeights.random(D, I, E, k, R, SCALE, LORA_BOUND, normalize, dt, seed);
    }

    /** max |a − b| / max |b|: relative to the size of the result. */
    static double relativeDiff(INDArray a, INDArray b) {
        double scale = Math.max(b.amaxNumber().doubleValue(), 1e-30);
        return a.castTo(DataType.DOUBLE).sub(b.castTo(DataType.DOUBLE)).amaxNumber().doubleValue() / scale;
    }

    static INDArray[] gradientArrays(SharedBaseGradients g) {
        return new INDArray[] {g.a1(), g.b1(), g.a3(), g.b3(), g.a2(), g.b2(), g.gate(), g.input()};
    }

    static final String[] NAMES = {"a1", "b1", "a3", "b3", "a2", "b2", "gate", "input"};

    /** Forward and every gradient, factorised vs naive, in float32. */
    private void assertImplementationsAgree(LowRankWeights w, INDArray x, long seed) {
        LowRankExperts.Pass fast = factorised.forward(w, x);
        LowRankExperts.Pass slow = naive.forward(w, x);
        double forward = relativeDiff(fast.output(), slow.output());
        assertTrue(forward <= 1e-5, "forward factorised vs naive relative diff " + forward);
        INDArray dy = LowRankAdapters.uniform(new Random(seed + 1), x.dataType(), 1.0, x.size(0), D);
        INDArray[] gf = gradientArrays(factorised.backward(w, fast, dy));
        INDArray[] gn = gradientArrays(naive.backward(w, slow, dy));
        for (int j = 0; j < gf.length; j++) {
            double diff = relativeDiff(gf[j], gn[j]);
            assertTrue(diff <= 1e-5, "d" + NAMES[j] + " factorised vs naive relative diff " + diff);
        }
    }

    @ParameterizedTest(name = "seed {0}, normalizeTopK {1}")
    @CsvSource({"1, true", "2, true", "3, false", "4, false", "5, true"})
    void factorisedEqualsNaiveInFloat32(long seed, boolean normalize) {
        assertImplementationsAgree(weights(DataType.FLOAT, seed, K, normalize), input(DataType.FLOAT, seed + 100, T),
                seed);
    }

    @ParameterizedTest(name = "normalizeTopK {0}")
    @CsvSource({"true", "false"})
    void factorisedEqualsNaiveWithKEqualToE(boolean normalize) {
        LowRankWeights w = weights(DataType.FLOAT, 11, E, normalize);
        INDArray x = input(DataType.FLOAT, 12, T);
        assertEquals(T, factorised.forward(w, x).routing().plan.tokensOf(5), "k = E puts every token on expert 5");
        assertImplementationsAgree(w, x, 13);
    }

    /** x[:,0] ≡ 3 and gate[3][0] = 8 make expert 3 every token's first choice; the other 7 experts get ≤ T. */
    private static LowRankWeights allOnExpertThree(DataType dt, int k, boolean normalize, INDArray x) {
        LowRankWeights w = weights(dt, 21, k, normalize);
        w.gate().putScalar(new long[] {3, 0}, 8.0);
        x.getColumn(0).assign(3.0);
        return w;
    }

    @ParameterizedTest(name = "K {0}")
    @CsvSource({"1", "2"})
    void everyTokenOnOneExpert(int k) {
        INDArray x = input(DataType.FLOAT, 22, T);
        LowRankWeights w = allOnExpertThree(DataType.FLOAT, k, true, x);
        PlanRows routing = factorised.forward(w, x).routing();
        assertEquals(T, routing.plan.tokensOf(3), "expert 3 holds every token");
        for (int t = 0; t < T; t++) {
            assertEquals(3, routing.expert(t, 0), "token " + t + " first choice");
        }
        assertImplementationsAgree(w, x, 23);
    }

    @Test
    void singleTokenWithEmptyExperts() {
        LowRankWeights w = weights(DataType.FLOAT, 31, K, true);
        INDArray x = input(DataType.FLOAT, 32, 1);
        assertEquals(E - K, countEmpty(factorised.forward(w, x).routing()), "one token leaves E-K experts empty");
        assertImplementationsAgree(w, x, 33);
    }

    private static int countEmpty(PlanRows routing) {
        int empty = 0;
        for (int e = 0; e < E; e++) {
            empty += routing.plan.tokensOf(e) == 0 ? 1 : 0;
        }
        return empty;
    }

    /**
     * With every B zero the block is the base SwiGLU FFN: bit for bit the same as the same products and
     * elementwise ops without the LoRA terms (they add exact zeros), and within float32 rounding of
     * {@link SwiGluMlp}, the model's own dense FFN. dA is then exactly zero.
     */
    @ParameterizedTest(name = "{0}")
    @CsvSource({"factorised", "naive"})
    void zeroBReproducesTheBaseFfn(String which) {
        LowRankExperts impl = which.equals("factorised") ? factorised : naive;
        LowRankWeights random = weights(DataType.FLOAT, 41, K, true);
        LowRankWeights w = new LowRankWeights(random.w1(), random.w3(), random.w2(), random.gate(),
                LowRankAdapters.peftInit(D, I, E, R, 16.0, DataType.FLOAT, 42), K, true);
        INDArray x = input(DataType.FLOAT, 43, T);
        LowRankExperts.Pass pass = impl.forward(w, x);

        INDArray h1 = x.mmul(w.w1().transpose());
        INDArray h3 = x.mmul(w.w3().transpose());
        INDArray a = h1.mul(Transforms.sigmoid(h1, true)).muli(h3);
        INDArray expected = a.mmul(w.w2().transpose());
        assertArrayEquals(expected.dup('c').data().asFloat(), pass.output().dup('c').data().asFloat(), 0f, "bit-identical to base");
        INDArray mlp = new SwiGluMlp(w.w1(), w.w3(), w.w2()).forward(x);
        assertTrue(relativeDiff(pass.output(), mlp) <= 1e-6, "SwiGluMlp within float32 rounding");

        SharedBaseGradients g = impl.backward(w, pass, Nd4j.ones(DataType.FLOAT, T, D));
        for (INDArray dA : new INDArray[] {g.a1(), g.a3(), g.a2()}) {
            assertEquals(0.0, dA.amaxNumber().doubleValue(), 0.0, "dA with B = 0");
        }
        assertTrue(g.b1().amaxNumber().doubleValue() > 0, "dB1 is not zero with B = 0");
    }

    @Test
    void badArgumentsNameWhatWasExpected() {
        LowRankWeights w = weights(DataType.FLOAT, 51, K, true);
        String dtype = assertThrows(IllegalArgumentException.class,
                () -> factorised.forward(w, input(DataType.DOUBLE, 52, T))).getMessage();
        assertEquals("shared-base MoLoRA input must be [T, 6] FLOAT, got [7, 6] DOUBLE", dtype);
        LowRankExperts.Pass slow = naive.forward(w, input(DataType.FLOAT, 53, T));
        String pass = assertThrows(IllegalArgumentException.class,
                () -> factorised.backward(w, slow, slow.output())).getMessage();
        assertEquals("factorised backward needs a pass from the factorised forward, got NaivePass", pass);
        String topK = assertThrows(IllegalArgumentException.class, () -> new LowRankWeights(w.w1(), w.w3(),
                w.w2(), w.gate(), w.adapters(), E + 1, true)).getMessage();
        assertEquals("top-k must be in [1, 8], got 9", topK);
    }
}
