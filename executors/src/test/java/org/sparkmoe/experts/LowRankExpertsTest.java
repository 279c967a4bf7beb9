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
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.Routes;

/**
 * The factorised low-rank experts against the naive per-token-weights reference (forward and backward, inside an
 * MoE block with a trainable router, so the router and input gradients flow through the routing weights), the
 * B = 0 identity with the base FFN, and the errors. Small shapes: E=8, K=2, R=2, D=6, I=5, T=7.
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

    /** The weights and router of one low-rank MoE layer. */
    record Setup(LowRankWeights weights, INDArray gate, RoutingRule rule) {
        LowRankFactorised factorised() {
            return new LowRankFactorised(weights, new Nd4jGroupedGemm());
        }

        LowRankNaive naive() {
            return new LowRankNaive(weights);
        }

        /** The MoE block over {@code experts} with this router, trainable. */
        MoeBlock block(ExpertFfn experts) {
            return new MoeBlock(new Router(gate), RouterOptions.of(rule).withTrainable(true), experts, null);
        }

        Routes route(INDArray x) {
            return new Router(gate).route(x.mmul(gate.transpose()), rule);
        }
    }

    static INDArray input(DataType dt, long seed, int t) {
        return LowRankAdapters.uniform(new Random(seed), dt, 1.0, t, D);
    }

    /** Random base and LoRA experts, router gate U(−1/√D, 1/√D). */
    static Setup setup(DataType dt, long seed, int k, boolean normalize) {
        LowRankWeights w = LowRankWeights.random(D, I, E, R, SCALE, LORA_BOUND, dt, seed);
        INDArray gate = LowRankAdapters.uniform(new Random(seed + 7), dt, 1 / Math.sqrt(D), E, D);
        return new Setup(w, gate, RoutingRule.softmaxTopK(k, normalize));
    }

    /**
     * As {@link #setup} with gpt-oss's expert biases U(−0.5, 0.5) and clamped gate, top-K renormalised; gate unit 0's
     * bias is 12 and up unit 1's −12 in every expert, so those units lie past the clamp (h1 > 7, h3 < −7) for every
     * token while the other values are of order 1.
     */
    static Setup gptOss(DataType dt, long seed, int k) {
        Setup s = setup(dt, seed, k, true);
        LowRankWeights w = s.weights().withRandomBiases(GatedActivation.CLAMPED_SWIGLU, 0.5, seed + 3);
        w.c1().getColumn(0).assign(12.0);
        w.c3().getColumn(1).assign(-12.0);
        return new Setup(w, s.gate(), s.rule());
    }

    /** max |a − b| / max |b|: relative to the size of the result. */
    static double relativeDiff(INDArray a, INDArray b) {
        double scale = Math.max(b.amaxNumber().doubleValue(), 1e-30);
        return a.castTo(DataType.DOUBLE).sub(b.castTo(DataType.DOUBLE)).amaxNumber().doubleValue() / scale;
    }

    static INDArray[] gradientArrays(MoeBlock.Gradients g) {
        ExpertGradients e = g.experts();
        return new INDArray[] {e.gate().dA(), e.gate().dB(), e.up().dA(), e.up().dB(), e.down().dA(), e.down().dB(),
                g.dRouter(), g.dx()};
    }

    static final String[] NAMES = {"a1", "b1", "a3", "b3", "a2", "b2", "gate", "input"};

    /** Forward and every gradient, factorised vs naive, in float32. */
    private static void assertImplementationsAgree(Setup s, INDArray x, long seed) {
        MoeBlock fastBlock = s.block(s.factorised());
        MoeBlock slowBlock = s.block(s.naive());
        MoeBlock.Context fast = fastBlock.forward(x);
        MoeBlock.Context slow = slowBlock.forward(x);
        double forward = relativeDiff(fast.out(), slow.out());
        assertTrue(forward <= 1e-5, "forward factorised vs naive relative diff " + forward);
        INDArray dy = LowRankAdapters.uniform(new Random(seed + 1), x.dataType(), 1.0, x.size(0), D);
        INDArray[] gf = gradientArrays(fastBlock.backward(fast, dy));
        INDArray[] gn = gradientArrays(slowBlock.backward(slow, dy));
        for (int j = 0; j < gf.length; j++) {
            double diff = relativeDiff(gf[j], gn[j]);
            assertTrue(diff <= 1e-5, "d" + NAMES[j] + " factorised vs naive relative diff " + diff);
        }
    }

    @ParameterizedTest(name = "seed {0}, normalizeTopK {1}")
    @CsvSource({"1, true", "2, true", "3, false", "4, false", "5, true"})
    void factorisedEqualsNaiveInFloat32(long seed, boolean normalize) {
        assertImplementationsAgree(setup(DataType.FLOAT, seed, K, normalize), input(DataType.FLOAT, seed + 100, T),
                seed);
    }

    @ParameterizedTest(name = "normalizeTopK {0}")
    @CsvSource({"true", "false"})
    void factorisedEqualsNaiveWithKEqualToE(boolean normalize) {
        Setup s = setup(DataType.FLOAT, 11, E, normalize);
        INDArray x = input(DataType.FLOAT, 12, T);
        assertEquals(T, s.route(x).plan.tokensOf(5), "k = E puts every token on expert 5");
        assertImplementationsAgree(s, x, 13);
    }

    /**
     * gpt-oss: the experts' biases mixed with the routing weights and the clamped gate, factorised vs naive (forward,
     * LoRA, router and input gradients), with units past the clamp.
     */
    @ParameterizedTest(name = "seed {0}, K {1}")
    @CsvSource({"61, 2", "62, 3", "63, 8"})
    void factorisedEqualsNaiveWithGptOssBiasesAndClamp(long seed, int k) {
        Setup s = gptOss(DataType.FLOAT, seed, k);
        INDArray x = input(DataType.FLOAT, seed + 100, T);
        assertImplementationsAgree(s, x, seed);
        // the clamped units pass no gradient: their rows of dB1 (gate unit 0) and dB3 (up unit 1) are zero
        MoeBlock block = s.block(s.factorised());
        ExpertGradients g = block.backward(block.forward(x), Nd4j.ones(DataType.FLOAT, T, D)).experts();
        assertEquals(0.0, g.gate().dB().get(NDArrayIndex.all(), NDArrayIndex.point(0), NDArrayIndex.all())
                .amaxNumber().doubleValue(), 0.0, "gate unit 0 is clamped");
        assertEquals(0.0, g.up().dB().get(NDArrayIndex.all(), NDArrayIndex.point(1), NDArrayIndex.all())
                .amaxNumber().doubleValue(), 0.0, "up unit 1 is clamped");
        assertTrue(g.gate().dB().amaxNumber().doubleValue() > 0, "the other gate units pass gradient");
    }

    /**
     * The biases enter as Σ_k g_k·c_{e_k}: with B = 0 (base only) the output is the base FFN of x with those mixed
     * biases, computed here token by token from the routes.
     */
    @Test
    void gptOssBiasesAreMixedWithTheRoutingWeights() {
        Setup s = gptOss(DataType.DOUBLE, 71, 3);
        LowRankWeights w = s.weights().withAdapters(LowRankAdapters.peftInit(D, I, E, R, 16.0, DataType.DOUBLE, 72));
        INDArray x = input(DataType.DOUBLE, 73, T);
        Routes routes = s.route(x);
        INDArray y = new LowRankFactorised(w, new Nd4jGroupedGemm()).forward(x, routes).out();
        for (int t = 0; t < T; t++) {
            INDArray c1 = Nd4j.zeros(DataType.DOUBLE, 1, I);
            INDArray c3 = Nd4j.zeros(DataType.DOUBLE, 1, I);
            INDArray c2 = Nd4j.zeros(DataType.DOUBLE, 1, D);
            for (int k = 0; k < 3; k++) {
                int e = routes.expert(t, k);
                double g = routes.weight(t, k);
                c1.addi(w.c1().getRow(e).reshape(1, I).mul(g));
                c3.addi(w.c3().getRow(e).reshape(1, I).mul(g));
                c2.addi(w.c2().getRow(e).reshape(1, D).mul(g));
            }
            INDArray xt = x.getRow(t).reshape(1, D);
            INDArray act = org.sparkmoe.kernels.Activations.gated(GatedActivation.CLAMPED_SWIGLU,
                    xt.mmul(w.w1().transpose()).addi(c1), xt.mmul(w.w3().transpose()).addi(c3),
                    org.sparkmoe.kernels.Workers.SERIAL);
            INDArray expected = act.mmul(w.w2().transpose()).addi(c2);
            assertTrue(relativeDiff(y.getRow(t).reshape(1, D), expected) <= 1e-12, "token " + t);
        }
    }

    /** x[:,0] ≡ 3 and gate[3][0] = 8 make expert 3 every token's first choice; the other 7 experts get ≤ T. */
    private static Setup allOnExpertThree(DataType dt, int k, boolean normalize, INDArray x) {
        Setup s = setup(dt, 21, k, normalize);
        s.gate().putScalar(new long[] {3, 0}, 8.0);
        x.getColumn(0).assign(3.0);
        return s;
    }

    @ParameterizedTest(name = "K {0}")
    @CsvSource({"1", "2"})
    void everyTokenOnOneExpert(int k) {
        INDArray x = input(DataType.FLOAT, 22, T);
        Setup s = allOnExpertThree(DataType.FLOAT, k, true, x);
        Routes routes = s.route(x);
        assertEquals(T, routes.plan.tokensOf(3), "expert 3 holds every token");
        for (int t = 0; t < T; t++) {
            assertEquals(3, routes.expert(t, 0), "token " + t + " first choice");
        }
        assertImplementationsAgree(s, x, 23);
    }

    @Test
    void singleTokenWithEmptyExperts() {
        Setup s = setup(DataType.FLOAT, 31, K, true);
        INDArray x = input(DataType.FLOAT, 32, 1);
        Routes routes = s.route(x);
        int empty = 0;
        for (int e = 0; e < E; e++) {
            empty += routes.plan.tokensOf(e) == 0 ? 1 : 0;
        }
        assertEquals(E - K, empty, "one token leaves E-K experts empty");
        assertImplementationsAgree(s, x, 33);
    }

    /**
     * With every B zero the experts are the base SwiGLU FFN: bit for bit the same as the same products and
     * elementwise ops without the LoRA terms (they add exact zeros), and within float32 rounding of
     * {@link SwiGluMlp}, the model's own dense FFN. dA is then exactly zero.
     */
    @ParameterizedTest(name = "{0}")
    @CsvSource({"factorised", "naive"})
    void zeroBReproducesTheBaseFfn(String which) {
        Setup random = setup(DataType.FLOAT, 41, K, true);
        LowRankWeights w = random.weights().withAdapters(LowRankAdapters.peftInit(D, I, E, R, 16.0, DataType.FLOAT, 42));
        LowRankExperts impl = which.equals("factorised") ? new LowRankFactorised(w, new Nd4jGroupedGemm())
                : new LowRankNaive(w);
        INDArray x = input(DataType.FLOAT, 43, T);
        ExpertFfn.Pass pass = impl.forward(x, random.route(x));

        INDArray h1 = x.mmul(w.w1().transpose());
        INDArray h3 = x.mmul(w.w3().transpose());
        INDArray a = org.sparkmoe.kernels.Activations.swiGlu(h1, h3);
        INDArray expected = a.mmul(w.w2().transpose());
        assertArrayEquals(expected.dup('c').data().asFloat(), pass.out().dup('c').data().asFloat(), 0f, "bit-identical to base");
        INDArray mlp = new SwiGluMlp(w.w1(), w.w3(), w.w2()).forward(x);
        assertTrue(relativeDiff(pass.out(), mlp) <= 1e-6, "SwiGluMlp within float32 rounding");

        ExpertGradients g = impl.backward(pass, Nd4j.ones(DataType.FLOAT, T, D));
        for (INDArray dA : new INDArray[] {g.gate().dA(), g.up().dA(), g.down().dA()}) {
            assertEquals(0.0, dA.amaxNumber().doubleValue(), 0.0, "dA with B = 0");
        }
        assertTrue(g.gate().dB().amaxNumber().doubleValue() > 0, "dB1 is not zero with B = 0");
    }

    @Test
    void badArgumentsNameWhatWasExpected() {
        Setup s = setup(DataType.FLOAT, 51, K, true);
        INDArray x = input(DataType.FLOAT, 53, T);
        Routes routes = s.route(x);
        String dtype = assertThrows(IllegalArgumentException.class,
                () -> s.factorised().forward(input(DataType.DOUBLE, 52, T), routes)).getMessage();
        assertEquals("low-rank experts' input must be [T, 6] FLOAT, got [7, 6] DOUBLE", dtype);
        ExpertFfn.Pass slow = s.naive().forward(x, routes);
        String pass = assertThrows(IllegalArgumentException.class,
                () -> s.factorised().backward(slow, slow.out())).getMessage();
        assertEquals("factorised backward needs a pass from the factorised forward, got NaivePass", pass);
        Setup tooMany = new Setup(s.weights(), s.gate(), RoutingRule.softmaxTopK(E + 1, true));
        String topK = assertThrows(IllegalArgumentException.class, () -> tooMany.block(s.factorised())).getMessage();
        assertEquals("top-k must be in [1, 8], got 9", topK);
    }
}
