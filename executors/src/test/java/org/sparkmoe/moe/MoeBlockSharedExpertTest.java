package org.sparkmoe.moe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.Random;
import java.util.function.DoubleSupplier;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.routing.LoadBalancingLoss;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.ScoreFunction;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LoraExperts;
import org.sparkmoe.experts.SharedExpert;
import org.sparkmoe.experts.SwiGluMlp;

/**
 * Qwen2-MoE's frozen shared expert in the LoRA block: {@code out += sigmoid(x·Wsgᵀ) ⊙ shared(x)}. Float64 central
 * differences of the input, the router and the LoRA factors with the shared expert present; with B = 0 in float32,
 * bit-identity with {@link MoeBlock#forward} of the same weights without LoRA (built through {@link MoeBlock#with}).
 * GLM-4.5's ungated shared expert ({@code out += shared(x)}) under a sigmoid, grouped, bias-corrected, scaled router:
 * the same finite-difference check, and the sum of the routed block and the MLP. LoRA on the shared expert's
 * gate/up/down (one expert): central differences of every factor, gated and ungated, and B = 0 reproducing the frozen
 * block bit for bit.
 */
class MoeBlockSharedExpertTest {
    private static final int T = 6;
    private static final int D = 5;
    private static final int I = 4;
    private static final int SI = 3;
    private static final int E = 4;
    private static final int R = 2;

    private record Weights(INDArray router, ExpertWeights base, SwiGluMlp shared, INDArray sharedGate) {
        static Weights random(long seed, DataType dt) {
            Random rnd = new Random(seed);
            return new Weights(gaussian(rnd, dt, 0.8, E, D),
                    new ExpertWeights(gaussian(rnd, dt, 0.5, E, I, D), gaussian(rnd, dt, 0.5, E, I, D),
                            gaussian(rnd, dt, 0.5, E, D, I)),
                    new SwiGluMlp(gaussian(rnd, dt, 0.5, SI, D), gaussian(rnd, dt, 0.5, SI, D),
                            gaussian(rnd, dt, 0.5, D, SI)),
                    gaussian(rnd, dt, 0.7, 1, D));
        }

        MoeBlock frozen(boolean normalize) {
            return new MoeBlock(new Router(router), RouterOptions.of(RoutingRule.softmaxTopK(2, normalize)),
                    new FullExperts(base, new Nd4jGroupedGemm()), new SharedExpert(shared, sharedGate));
        }

        /** GLM-4.5's block: sigmoid scores, a correction bias, 2 groups of which 1 kept, scaled by 2.5, ungated. */
        MoeBlock sigmoidUngated(double[] correction) {
            RoutingRule rule = new RoutingRule(2, ScoreFunction.SIGMOID, true, 2, 1, RoutingRule.GroupRank.TOP2_SUM,
                    2.5);
            return new MoeBlock(new Router(router, null, correction), RouterOptions.of(rule),
                    new FullExperts(base, new Nd4jGroupedGemm()), SharedExpert.ungated(shared));
        }
    }

    @Test
    void gradientsWithSharedExpertMatchFiniteDifferences() {
        Weights w = Weights.random(61, DataType.DOUBLE);
        Random rnd = new Random(62);
        LoraExperts gate = new LoraExperts(gaussian(rnd, DataType.DOUBLE, 0.5, E, R, D),
                gaussian(rnd, DataType.DOUBLE, 0.5, E, I, R), 4.0);
        LoraExperts down = new LoraExperts(gaussian(rnd, DataType.DOUBLE, 0.5, E, R, I),
                gaussian(rnd, DataType.DOUBLE, 0.5, E, D, R), 2.0);
        INDArray router = w.router().dup();
        MoeBlock frozen = w.frozen(false);
        MoeBlock block = frozen.with(router, frozen.options().withTrainable(true),
                ((FullExperts) frozen.experts()).withLora(gate, null, down));
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        INDArray dOut = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        MoeBlock.Gradients g = block.backward(block.forward(x), dOut);
        DoubleSupplier loss = () -> GradientCheck.dot(block.forward(x).out(), dOut);
        GradientCheck.check("shared expert: x", x, g.dx(), loss);
        GradientCheck.check("shared expert: router", router, g.dRouter(), loss);
        GradientCheck.check("shared expert: gate A", gate.a(), g.experts().gate().dA(), loss);
        GradientCheck.check("shared expert: down B", down.b(), g.experts().down().dB(), loss);
    }

    @Test
    void zeroBWithSharedExpertReproducesTheFrozenBlockExactly() {
        for (boolean normalize : new boolean[] {true, false}) {
            Weights w = Weights.random(70, DataType.FLOAT);
            INDArray x = gaussian(new Random(71), DataType.FLOAT, 1.0, T, D);
            MoeBlock frozen = w.frozen(normalize);
            MoeBlock lora = frozen.with(null, frozen.options(), ((FullExperts) frozen.experts()).withLora(
                    LoraExperts.init(E, D, I, R, 8, 1, DataType.FLOAT), LoraExperts.init(E, D, I, R, 8, 2, DataType.FLOAT),
                    LoraExperts.init(E, I, D, R, 8, 3, DataType.FLOAT)));
            MoeBlock.Output expected = frozen.forward(x, 2);
            MoeBlock.Context actual = lora.forward(x);
            assertArrayEquals(expected.hidden().data().asFloat(), actual.out().data().asFloat(),
                    "normalize " + normalize);
            assertArrayEquals(expected.routerLogits().data().asFloat(), actual.routerLogits().data().asFloat());
        }
    }

    @Test
    void ungatedSharedExpertGradientsMatchFiniteDifferences() {
        Weights w = Weights.random(91, DataType.DOUBLE);
        Random rnd = new Random(92);
        LoraExperts up = new LoraExperts(gaussian(rnd, DataType.DOUBLE, 0.5, E, R, D),
                gaussian(rnd, DataType.DOUBLE, 0.5, E, I, R), 4.0);
        INDArray router = w.router().dup();
        MoeBlock frozen = w.sigmoidUngated(new double[] {0.3, -0.2, 0.1, 0.0});
        MoeBlock block = frozen.with(router, frozen.options().withTrainable(true),
                ((FullExperts) frozen.experts()).withLora(null, up, null));
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        INDArray dOut = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        MoeBlock.Gradients g = block.backward(block.forward(x), dOut);
        DoubleSupplier loss = () -> GradientCheck.dot(block.forward(x).out(), dOut);
        GradientCheck.check("ungated shared expert: x", x, g.dx(), loss);
        GradientCheck.check("ungated shared expert: router", router, g.dRouter(), loss);
        GradientCheck.check("ungated shared expert: up A", up.a(), g.experts().up().dA(), loss);
    }

    @Test
    void ungatedSharedExpertIsAddedAsItIs() {
        Weights w = Weights.random(95, DataType.DOUBLE);
        INDArray x = gaussian(new Random(96), DataType.DOUBLE, 1.0, T, D);
        MoeBlock.Output withShared = w.sigmoidUngated(null).forward(x, 2);
        MoeBlock routedOnly = new MoeBlock(new Router(w.router()), w.sigmoidUngated(null).options(),
                new FullExperts(w.base(), new Nd4jGroupedGemm()), null);
        INDArray expected = routedOnly.forward(x, 2).hidden().add(w.shared().forwardTraining(x).out());
        assertArrayEquals(expected.data().asDouble(), withShared.hidden().data().asDouble(), 1e-12);
    }

    /** LoRA of one expert on gate, up, down of the shared expert: A [1, R, in], B [1, out, R]. */
    private static LoraExperts[] sharedLora(Random rnd) {
        return new LoraExperts[] {
                new LoraExperts(gaussian(rnd, DataType.DOUBLE, 0.5, 1, R, D), gaussian(rnd, DataType.DOUBLE, 0.5, 1, SI, R),
                        4.0),
                new LoraExperts(gaussian(rnd, DataType.DOUBLE, 0.5, 1, R, D), gaussian(rnd, DataType.DOUBLE, 0.5, 1, SI, R),
                        2.0),
                new LoraExperts(gaussian(rnd, DataType.DOUBLE, 0.5, 1, R, SI), gaussian(rnd, DataType.DOUBLE, 0.5, 1, D, R),
                        6.0)};
    }

    /** Central differences of every shared-expert LoRA factor, the input and a routed factor, gated and ungated. */
    @Test
    void sharedExpertLoraGradientsMatchFiniteDifferences() {
        for (boolean gated : new boolean[] {true, false}) {
            Weights w = Weights.random(gated ? 101 : 102, DataType.DOUBLE);
            Random rnd = new Random(103);
            LoraExperts routedUp = new LoraExperts(gaussian(rnd, DataType.DOUBLE, 0.5, E, R, D),
                    gaussian(rnd, DataType.DOUBLE, 0.5, E, I, R), 4.0);
            MoeBlock frozen = gated ? w.frozen(true) : w.sigmoidUngated(new double[] {0.3, -0.2, 0.1, 0.0});
            MoeBlock routed = frozen.with(null, frozen.options(),
                    ((FullExperts) frozen.experts()).withLora(null, routedUp, null));
            LoraExperts[] factors = sharedLora(rnd);
            MoeBlock block = routed.withShared(frozen.shared().withLora(factors[0], factors[1], factors[2]));
            INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
            INDArray dOut = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
            MoeBlock.Gradients g = block.backward(block.forward(x), dOut);
            DoubleSupplier loss = () -> GradientCheck.dot(block.forward(x).out(), dOut);
            String name = gated ? "gated" : "ungated";
            GradientCheck.check(name + " shared LoRA: x", x, g.dx(), loss);
            GradientCheck.check(name + " shared LoRA: routed up A", routedUp.a(), g.experts().up().dA(), loss);
            SharedExpert.Gradients sg = g.shared();
            GradientCheck.check(name + " shared LoRA: gate A", factors[0].a(), sg.gate().dA(), loss);
            GradientCheck.check(name + " shared LoRA: gate B", factors[0].b(), sg.gate().dB(), loss);
            GradientCheck.check(name + " shared LoRA: up A", factors[1].a(), sg.up().dA(), loss);
            GradientCheck.check(name + " shared LoRA: up B", factors[1].b(), sg.up().dB(), loss);
            GradientCheck.check(name + " shared LoRA: down A", factors[2].a(), sg.down().dA(), loss);
            GradientCheck.check(name + " shared LoRA: down B", factors[2].b(), sg.down().dB(), loss);
        }
    }

    @Test
    void zeroBOnTheSharedExpertReproducesTheFrozenBlockExactly() {
        Weights w = Weights.random(110, DataType.FLOAT);
        INDArray x = gaussian(new Random(111), DataType.FLOAT, 1.0, T, D);
        for (MoeBlock frozen : new MoeBlock[] {w.frozen(true), w.sigmoidUngated(new double[] {0.3, -0.2, 0.1, 0.0})}) {
            MoeBlock lora = frozen.withShared(frozen.shared().withLora(
                    LoraExperts.init(1, D, SI, R, 8, 1, DataType.FLOAT), LoraExperts.init(1, D, SI, R, 8, 2, DataType.FLOAT),
                    LoraExperts.init(1, SI, D, R, 8, 3, DataType.FLOAT)));
            assertArrayEquals(frozen.forward(x, 2).hidden().data().asFloat(), lora.forward(x).out().data().asFloat());
        }
    }

    /** The shared expert's one-expert grouped products give the dense MLP's bits in float32. */
    @Test
    void theSharedExpertComputesAsTheDenseMlpInFloat() {
        Weights w = Weights.random(120, DataType.FLOAT);
        INDArray x = gaussian(new Random(121), DataType.FLOAT, 1.0, T, D);
        double[] sum = new double[T * D];
        SharedExpert.ungated(w.shared()).addTo(x, sum, true);
        float[] expected = w.shared().forward(x).data().asFloat();
        float[] actual = new float[sum.length];
        for (int i = 0; i < sum.length; i++) {
            actual[i] = (float) sum[i];
        }
        assertArrayEquals(expected, actual);
    }

    @Test
    void sharedLoraThatDoesNotFitIsRejected() {
        Weights w = Weights.random(130, DataType.DOUBLE);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SharedExpert.ungated(w.shared()).withLora(null, null,
                        new LoraExperts(gaussian(new Random(1), DataType.DOUBLE, 0.5, 1, R, D),
                                gaussian(new Random(2), DataType.DOUBLE, 0.5, 1, D, R), 4.0)));
        assertTrue(e.getMessage().contains("LoRA on w2 (down_proj) does not fit its base weight"), e.getMessage());
    }

    @Test
    void aSharedExpertWithoutItsGateIsRejected() {
        Weights w = Weights.random(80, DataType.DOUBLE);
        FullExperts ffn = new FullExperts(w.base(), new Nd4jGroupedGemm());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new SharedExpert(w.shared(), null));
        assertTrue(e.getMessage().contains("shared expert needs its gate"), e.getMessage());
        IllegalArgumentException shape = assertThrows(IllegalArgumentException.class,
                () -> new MoeBlock(new Router(w.router()), RouterOptions.of(RoutingRule.softmaxTopK(2, true)), ffn,
                        new SharedExpert(w.shared(), gaussian(new Random(1), DataType.DOUBLE, 1.0, 2, D))));
        assertTrue(shape.getMessage().contains("shared expert gate must be [1, D] = [1, 5]"), shape.getMessage());
    }
}
