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
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.experts.LoraExpertFfn;
import org.sparkmoe.experts.LoraExperts;

/**
 * Qwen2-MoE's frozen shared expert in the LoRA block: {@code out += sigmoid(x·Wsgᵀ) ⊙ shared(x)}. Float64 central
 * differences of the input, the router and the LoRA factors with the shared expert present; with B = 0 in float32,
 * bit-identity with {@link SparseMoeBlock#forward} of the same weights (built through {@link SparseMoeBlock#withLora}).
 */
class LoraMoeBlockSharedExpertTest {
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

        SparseMoeBlock frozen(boolean normalize) {
            return new SparseMoeBlock(new Router(router, normalize), base, shared, sharedGate, new Nd4jGroupedGemm());
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
        LoraMoeBlock block = w.frozen(false).withLora(router, RouterOptions.qwen2Moe(2, false).withTrainable(true),
                gate, null, down);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        INDArray dOut = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);
        LoraMoeBlock.Gradients g = block.backward(block.forward(x), dOut);
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
            SparseMoeBlock frozen = w.frozen(normalize);
            LoraMoeBlock lora = frozen.withLora(null, frozen.routerOptions(2),
                    LoraExperts.init(E, D, I, R, 8, 1, DataType.FLOAT), LoraExperts.init(E, D, I, R, 8, 2, DataType.FLOAT),
                    LoraExperts.init(E, I, D, R, 8, 3, DataType.FLOAT));
            SparseMoeBlock.Output expected = frozen.forward(x, 2);
            LoraMoeBlock.Context actual = lora.forward(x);
            assertArrayEquals(expected.hidden().data().asFloat(), actual.out().data().asFloat(),
                    "normalize " + normalize);
            assertArrayEquals(expected.routerLogits().data().asFloat(), actual.routerLogits().data().asFloat());
        }
    }

    @Test
    void aSharedExpertWithoutItsGateIsRejected() {
        Weights w = Weights.random(80, DataType.DOUBLE);
        LoraExpertFfn ffn = new LoraExpertFfn(w.base(), null, null, null, new Nd4jGroupedGemm());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new LoraMoeBlock(w.router(), RouterOptions.mixtral(2), ffn, w.shared(), null));
        assertTrue(e.getMessage().contains("shared expert needs its gate"), e.getMessage());
        IllegalArgumentException shape = assertThrows(IllegalArgumentException.class,
                () -> new LoraMoeBlock(w.router(), RouterOptions.mixtral(2), ffn, w.shared(),
                        gaussian(new Random(1), DataType.DOUBLE, 1.0, 2, D)));
        assertTrue(shape.getMessage().contains("shared expert gate must be [1, D] = [1, 5]"), shape.getMessage());
    }
}
