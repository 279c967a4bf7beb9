package org.sparkmoe.moe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.DoubleSupplier;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.routing.LoadBalancingLoss;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LoraExperts;

/**
 * {@link MoeBlock}: float64 central differences for the input, the router weights and both LoRA factors of
 * every projection, under Mixtral and Qwen2-MoE routing, with jitter, K = 1 and K = E, and with a
 * loss on the router logits; gpt-oss's block (router bias, expert biases, the clamped gate with some values clamped,
 * the router bias's gradient too); float32 against float64; and with every B = 0, bit-identity with the frozen
 * {@link MoeBlock}. The scalar loss is Σ out ⊙ W (+ Σ logits ⊙ V), so dOut = W and dLogits = V.
 */
class MoeBlockTrainingTest {
    private static final int T = 6;
    private static final int D = 5;
    private static final int I = 4;
    private static final int E = 4;
    private static final int R = 2;

    /** Every tensor of one block, random, LoRA B non-zero; routerBias null except for gpt-oss. */
    private record Setup(INDArray router, INDArray routerBias, ExpertWeights base, LoraExperts gate, LoraExperts up,
                         LoraExperts down) {
        static Setup random(long seed, DataType dt) {
            Random rnd = new Random(seed);
            return new Setup(gaussian(rnd, dt, 0.8, E, D), null,
                    new ExpertWeights(gaussian(rnd, dt, 0.5, E, I, D), gaussian(rnd, dt, 0.5, E, I, D),
                            gaussian(rnd, dt, 0.5, E, D, I)),
                    lora(rnd, dt, D, I, 4.0), lora(rnd, dt, D, I, 2.0), lora(rnd, dt, I, D, 3.0));
        }

        /** gpt-oss: router bias, biases on every projection, the clamped gate; gate and up weights large (std 3.5). */
        static Setup gptOss(long seed, DataType dt) {
            Random rnd = new Random(seed);
            return new Setup(gaussian(rnd, dt, 0.8, E, D), gaussian(rnd, dt, 0.5, E),
                    new ExpertWeights(WeightStack.of(gaussian(rnd, dt, 3.5, E, I, D)),
                            WeightStack.of(gaussian(rnd, dt, 3.5, E, I, D)), WeightStack.of(gaussian(rnd, dt, 0.5, E, D, I)),
                            gaussian(rnd, dt, 0.5, E, I), gaussian(rnd, dt, 0.5, E, I), gaussian(rnd, dt, 0.5, E, D),
                            GatedActivation.CLAMPED_SWIGLU),
                    lora(rnd, dt, D, I, 4.0), lora(rnd, dt, D, I, 2.0), lora(rnd, dt, I, D, 3.0));
        }

        private static LoraExperts lora(Random rnd, DataType dt, int in, int out, double alpha) {
            return new LoraExperts(gaussian(rnd, dt, 0.5, E, R, in), gaussian(rnd, dt, 0.5, E, out, R), alpha);
        }

        Setup castTo(DataType dt) {
            return new Setup(router.castTo(dt), routerBias == null ? null : routerBias.castTo(dt),
                    new ExpertWeights(WeightStack.of(base.w1().toArray(dt)), WeightStack.of(base.w3().toArray(dt)),
                            WeightStack.of(base.w2().toArray(dt)), castOrNull(base.b1(), dt), castOrNull(base.b3(), dt),
                            castOrNull(base.b2(), dt), base.activation()),
                    cast(gate, dt), cast(up, dt), cast(down, dt));
        }

        private static INDArray castOrNull(INDArray a, DataType dt) {
            return a == null ? null : a.castTo(dt);
        }

        private static LoraExperts cast(LoraExperts l, DataType dt) {
            return new LoraExperts(l.a().castTo(dt), l.b().castTo(dt), l.alpha());
        }

        MoeBlock block(RouterOptions options) {
            return new MoeBlock(new Router(router, routerBias, null), options,
                    new FullExperts(base, gate, up, down, new Nd4jGroupedGemm()), null);
        }
    }

    @Test
    void mixtralGradientsMatchFiniteDifferences() {
        checkGradients(31, RouterOptions.of(RoutingRule.softmaxTopK(2, true)).withTrainable(true), false, false);
    }

    @Test
    void qwenWithoutRenormalisationGradientsMatchFiniteDifferences() {
        checkGradients(32, RouterOptions.of(RoutingRule.softmaxTopK(2, false)).withTrainable(true), false, false);
    }

    /**
     * gpt-oss: the router bias gets its gradient, the expert biases shift the SwiGLU inputs and the down output
     * (inside the routing weight), and the clamp cuts the gradient of clamped values (asserted to occur).
     */
    @Test
    void gptOssGradientsMatchFiniteDifferences() {
        RouterOptions options = RouterOptions.of(RoutingRule.softmaxTopK(2, true)).withTrainable(true);
        Setup s = Setup.gptOss(90, DataType.DOUBLE);
        MoeBlock.Context ctx = s.block(options).forward(gaussian(new Random(90 + 1000), DataType.DOUBLE, 1.0, T, D));
        checkGradients(s, 90, options, false, true);
        // the clamp is what the large gate/up weights exercise: count clamped values of expert 0 on these inputs
        INDArray x = gaussian(new Random(90 + 1000), DataType.DOUBLE, 1.0, T, D);
        INDArray h1 = x.mmul(s.base().w1().matrix(0).transpose()).addiRowVector(s.base().b1().getRow(0));
        INDArray h3 = x.mmul(s.base().w3().matrix(0).transpose()).addiRowVector(s.base().b3().getRow(0));
        long clamped = h1.gt(GatedActivation.LIMIT).castTo(DataType.INT32).sumNumber().longValue()
                + org.nd4j.linalg.ops.transforms.Transforms.abs(h3).gt(GatedActivation.LIMIT).castTo(DataType.INT32)
                .sumNumber().longValue();
        assertTrue(clamped > 0, "some gate or up values of expert 0 exceed the limit");
        assertTrue(ctx.out().amaxNumber().doubleValue() > 0);
    }

    @Test
    void lossOnLogitsGradientsMatchFiniteDifferences() {
        checkGradients(33, RouterOptions.of(RoutingRule.softmaxTopK(2, true)).withTrainable(true), false, true);
    }

    @Test
    void jitterGradientsMatchFiniteDifferences() {
        checkGradients(34, RouterOptions.of(RoutingRule.softmaxTopK(3, true)).withTrainable(true).withJitter(0.2), true, false);
    }

    @Test
    void topOneGradientsMatchFiniteDifferences() {
        checkGradients(35, RouterOptions.of(RoutingRule.softmaxTopK(1, true)).withTrainable(true), false, true);
    }

    @Test
    void everyExpertGradientsMatchFiniteDifferences() {
        // K = E: Mixtral's renormalised weights are then the full softmax; Qwen's are too, unrenormalised
        checkGradients(36, RouterOptions.of(RoutingRule.softmaxTopK(E, true)).withTrainable(true), false, false);
        checkGradients(37, RouterOptions.of(RoutingRule.softmaxTopK(E, false)).withTrainable(true), false, true);
    }

    /** Renormalised top-1 weights are always 1: the output gives the router no gradient, only a loss on logits. */
    @Test
    void mixtralTopOneGivesTheRouterNoGradientFromTheOutput() {
        Setup s = Setup.random(45, DataType.DOUBLE);
        Random rnd = new Random(46);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        MoeBlock block = s.block(RouterOptions.of(RoutingRule.softmaxTopK(1, true)).withTrainable(true));
        MoeBlock.Gradients g = block.backward(block.forward(x), gaussian(rnd, DataType.DOUBLE, 1.0, T, D));
        assertEquals(0.0, g.dRouter().amaxNumber().doubleValue(), 0.0);
    }

    @Test
    void frozenRouterHasNoRouterGradientButInputStillFlowsThroughIt() {
        Setup s = Setup.random(38, DataType.DOUBLE);
        Random rnd = new Random(39);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        MoeBlock block = s.block(RouterOptions.of(RoutingRule.softmaxTopK(2, true)));
        MoeBlock.Gradients g = block.backward(block.forward(x), w);
        assertNull(g.dRouter());
        GradientCheck.check("frozen router: x", x, g.dx(), () -> GradientCheck.dot(block.forward(x).out(), w));
    }

    /**
     * Bit-identity with the frozen block: LoRA initialised as PEFT does (B = 0) adds exact zeros, and the
     * routing, SwiGLU and combine round to float32 at the same points as {@link MoeBlock}.
     */
    @Test
    void zeroBReproducesTheFrozenBlockExactly() {
        for (boolean normalize : new boolean[] {true, false}) {
            for (int topK : new int[] {1, 2, E}) {
                Setup s = Setup.random(40 + topK, DataType.FLOAT);
                LoraExperts gate = LoraExperts.init(E, D, I, R, 8, 1, DataType.FLOAT);
                LoraExperts up = LoraExperts.init(E, D, I, R, 8, 2, DataType.FLOAT);
                LoraExperts down = LoraExperts.init(E, I, D, R, 8, 3, DataType.FLOAT);
                INDArray x = gaussian(new Random(50 + topK), DataType.FLOAT, 1.0, T, D);
                RouterOptions options = RouterOptions.of(RoutingRule.softmaxTopK(topK, normalize));
                MoeBlock frozen = new MoeBlock(new Router(s.router()), options,
                        new FullExperts(s.base(), new Nd4jGroupedGemm()), null);
                MoeBlock lora = new MoeBlock(new Router(s.router()), options,
                        new FullExperts(s.base(), gate, up, down, new Nd4jGroupedGemm()), null);
                MoeBlock.Output expected = frozen.forward(x, topK);
                MoeBlock.Context actual = lora.forward(x);
                String what = "normalize=" + normalize + " K=" + topK;
                assertArrayEquals(expected.hidden().data().asFloat(), actual.out().data().asFloat(), 0f, what);
                assertArrayEquals(expected.routerLogits().data().asFloat(), actual.routerLogits().data().asFloat(),
                        0f, what + " logits");
            }
        }
    }

    @Test
    void float32MatchesFloat64() {
        for (RouterOptions options : new RouterOptions[] {RouterOptions.of(RoutingRule.softmaxTopK(2, true)).withTrainable(true),
                RouterOptions.of(RoutingRule.softmaxTopK(E, false)).withTrainable(true), RouterOptions.of(RoutingRule.softmaxTopK(1, false)).withTrainable(true)}) {
            Setup s64 = Setup.random(60, DataType.DOUBLE);
            Random rnd = new Random(61);
            INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
            INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
            MoeBlock b64 = s64.block(options);
            MoeBlock b32 = s64.castTo(DataType.FLOAT).block(options);
            MoeBlock.Context c64 = b64.forward(x);
            MoeBlock.Context c32 = b32.forward(x.castTo(DataType.FLOAT));
            assertArrayEquals(c64.routes().experts(), c32.routes().experts(), "routing must agree for the comparison");
            MoeBlock.Gradients g64 = b64.backward(c64, w);
            MoeBlock.Gradients g32 = b32.backward(c32, w.castTo(DataType.FLOAT));
            String what = options.toString();
            assertClose(c64.out(), c32.out(), what + " out");
            assertClose(g64.dx(), g32.dx(), what + " dx");
            assertClose(g64.dRouter(), g32.dRouter(), what + " dRouter");
            assertClose(g64.experts().gate().dA(), g32.experts().gate().dA(), what + " gate dA");
            assertClose(g64.experts().up().dB(), g32.experts().up().dB(), what + " up dB");
            assertClose(g64.experts().down().dA(), g32.experts().down().dA(), what + " down dA");
            assertClose(g64.experts().down().dB(), g32.experts().down().dB(), what + " down dB");
        }
    }

    @Test
    void jitterIsSeededAndOnlyInTraining() {
        Setup s = Setup.random(70, DataType.FLOAT);
        MoeBlock block = s.block(RouterOptions.of(RoutingRule.softmaxTopK(2, true)).withJitter(0.1));
        INDArray x = gaussian(new Random(71), DataType.FLOAT, 1.0, T, D);
        float[] a = block.forwardTraining(x, 5).out().data().asFloat();
        float[] b = block.forwardTraining(x, 5).out().data().asFloat();
        float[] c = block.forwardTraining(x, 6).out().data().asFloat();
        assertArrayEquals(a, b, 0f, "same seed, same bits");
        assertFalse(Arrays.equals(a, c), "another seed, other noise");
        MoeBlock plain = s.block(RouterOptions.of(RoutingRule.softmaxTopK(2, true)));
        assertArrayEquals(plain.forward(x).out().data().asFloat(), block.forward(x).out().data().asFloat(), 0f,
                "no jitter outside training");
    }

    @Test
    void badShapesAreNamed() {
        Setup s = Setup.random(80, DataType.DOUBLE);
        FullExperts ffn = new FullExperts(s.base(), s.gate(), s.up(), s.down(), new Nd4jGroupedGemm());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new MoeBlock(new Router(s.router().castTo(DataType.FLOAT)), RouterOptions.of(RoutingRule.softmaxTopK(2, true)), ffn, null));
        assertTrue(e.getMessage().contains("[4, 5] DOUBLE") && e.getMessage().contains("FLOAT"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> new MoeBlock(new Router(s.router()), RouterOptions.of(RoutingRule.softmaxTopK(E + 1, true)), ffn, null));
        assertTrue(e.getMessage().contains("got 5"), e.getMessage());
        MoeBlock block = new MoeBlock(new Router(s.router()), RouterOptions.of(RoutingRule.softmaxTopK(2, true)), ffn, null);
        e = assertThrows(IllegalArgumentException.class,
                () -> block.forward(gaussian(new Random(1), DataType.DOUBLE, 1.0, T, D + 1)));
        assertTrue(e.getMessage().contains("x must be [6, 5]") && e.getMessage().contains("[6, 6]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> RouterOptions.of(RoutingRule.softmaxTopK(2, true)).withJitter(1.5));
        assertTrue(e.getMessage().contains("jitter"), e.getMessage());
    }

    private static void assertClose(INDArray expected, INDArray actual, String what) {
        double maxRef = expected.amaxNumber().doubleValue();
        double maxDiff = expected.sub(actual.castTo(DataType.DOUBLE)).amaxNumber().doubleValue();
        assertTrue(maxRef > 1e-3, what + ": reference is (near) zero");
        assertTrue(maxDiff / maxRef <= 1e-5, what + ": relative error " + maxDiff / maxRef + " > 1e-5");
    }

    /**
     * Checks x, the router weights and every A and B. The loss asserts that each perturbed run routes as the
     * unperturbed one did (a flipped top-K would make the loss non-differentiable there: pick another seed).
     */
    private static void checkGradients(long seed, RouterOptions options, boolean jitter, boolean lossOnLogits) {
        checkGradients(Setup.random(seed, DataType.DOUBLE), seed, options, jitter, lossOnLogits);
    }

    private static void checkGradients(Setup s, long seed, RouterOptions options, boolean jitter,
                                       boolean lossOnLogits) {
        Random rnd = new Random(seed + 1000);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        INDArray w = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);   // dL/dout
        INDArray v = gaussian(rnd, DataType.DOUBLE, 1.0, T, E);   // dL/dlogits
        MoeBlock block = s.block(options);
        Function<INDArray, MoeBlock.Context> run = in -> jitter ? block.forwardTraining(in, 99) : block.forward(in);
        MoeBlock.Context ctx = run.apply(x);
        int[] routing = ctx.routes().experts();
        MoeBlock.Gradients g = block.backward(ctx, w, lossOnLogits ? v : null);
        DoubleSupplier loss = () -> {
            MoeBlock.Context c = run.apply(x);
            assertArrayEquals(routing, c.routes().experts(), "a perturbation flipped the top-K routing");
            return GradientCheck.dot(c.out(), w) + (lossOnLogits ? GradientCheck.dot(c.routerLogits(), v) : 0.0);
        };
        String p = options.topK() + "/" + (options.rule().normalizeTopK() ? "norm" : "raw") + (jitter ? "/jitter" : "")
                + " ";
        GradientCheck.check(p + "x", x, g.dx(), loss);
        GradientCheck.check(p + "router", s.router(), g.dRouter(), loss);
        if (s.routerBias() != null) {
            GradientCheck.check(p + "router bias", s.routerBias(), g.dRouterBias(), loss);
        }
        GradientCheck.check(p + "gate A", s.gate().a(), g.experts().gate().dA(), loss);
        GradientCheck.check(p + "gate B", s.gate().b(), g.experts().gate().dB(), loss);
        GradientCheck.check(p + "up A", s.up().a(), g.experts().up().dA(), loss);
        GradientCheck.check(p + "up B", s.up().b(), g.experts().up().dB(), loss);
        GradientCheck.check(p + "down A", s.down().a(), g.experts().down().dA(), loss);
        GradientCheck.check(p + "down B", s.down().b(), g.experts().down().dB(), loss);
        assertEquals(T * options.topK(), routing.length);
        if (lossOnLogits) {
            // the block's logits feed the load-balancing loss directly
            assertTrue(LoadBalancingLoss.of(List.of(ctx.routerLogits()), E, options.topK()).value() > 0);
        }
    }
}
