package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.DoubleSupplier;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.model.MoeTransformer;

/**
 * Float64 central differences through the whole tiny model (cast to float64): embedding → every decoder layer
 * (RMSNorm, RoPE GQA attention with Qwen3's and OLMoE's q/k norms and OLMoE's clamp, gpt-oss's sinks and windows,
 * LoRA MoE block, shared expert / dense layer for Qwen, gpt-oss's biased clamped experts) → final norm → LM head →
 * causal CE + coef · load-balancing loss. For every trainable tensor (LoRA A and B of every target in every layer,
 * and every router), the two entries with the largest analytic gradient and one random one are perturbed by ±h;
 * the error criterion is {@link GradientCheck}'s (relative, absolute floor 1). LoRA B is made non-zero (PEFT
 * starts it at zero, which would leave every A gradient zero). A separate check isolates the aux term:
 * d aux/dθ = (grad at coef 1 − grad at coef 0) against the finite differences of the aux value alone, on every
 * router and every layer's w2 (down) factors.
 */
class WholeModelGradientCheckTest {
    private static final int ENTRIES = 3;

    @Test
    void mixtralGradientsOfEveryLayerAndTargetMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.MIXTRAL, 0.5, 21);
    }

    @Test
    void qwenGradientsOfEveryLayerAndTargetMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.QWEN, 0.5, 22);
    }

    /** Through the per-head q/k RMSNorms, the o_proj bias and tied embeddings of every layer. */
    @Test
    void qwen3MoeGradientsOfEveryLayerAndTargetMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.QWEN3, 0.5, 26);
    }

    /** Through the whole-projection q/k RMSNorms and the clip_qkv clamp of q, k and v of every layer. */
    @Test
    void olmoeGradientsOfEveryLayerAndTargetMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.OLMOE, 0.5, 27);
    }

    /** LoRA on the gated shared expert's gate/up/down beside the routed experts' (and the router). */
    @Test
    void qwenGradientsWithSharedExpertLoraMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.QWEN, 0.5, 28, true);
    }

    /** LoRA on GLM-4.5's ungated shared experts beside the routed experts', under sigmoid grouped routing. */
    @Test
    void glmGradientsWithSharedExpertLoraMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.GLM, 0.0, 29, true);
    }

    /** LoRA on DeepSeek-V2's two ungated shared experts (one MLP) beside the routed experts'. */
    @Test
    void deepSeekV2GradientsWithSharedExpertLoraMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.DEEPSEEK_V2, 0.5, 30, true);
    }

    /**
     * Through gpt-oss's sinks, sliding and full layers, YaRN, q/k/v/o biases, the biased clamped experts (fused,
     * interleaved) and the router's bias, which trains with its weight.
     */
    @Test
    void gptOssGradientsOfEveryLayerAndTargetMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.GPT_OSS, 0.5, 28);
    }

    /**
     * Through DeepSeek's latent attention (plain q_proj, interleaved YaRN RoPE), the ungated shared experts and the
     * softmax group-limited router of every layer, and the dense layer 0.
     */
    @Test
    void deepSeekV2GradientsOfEveryLayerAndTargetMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.DEEPSEEK_V2, 0.5, 28);
    }

    /**
     * Through MLA with q_lora, the sigmoid router with its (frozen) correction bias, groups and routed_scaling_factor,
     * and FP8 weights (dequantized into the float64 model).
     */
    @Test
    void deepSeekV3Fp8GradientsOfEveryLayerAndTargetMatchFiniteDifferences() {
        checkTotalLoss(TinyModels.DEEPSEEK_V3_FP8, 0.0, 29); // no load-balancing loss: transformers defines none
    }

    @Test
    void mixtralAuxLossGradientMatchesFiniteDifferences() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.DOUBLE);
        TrainState state = perturbedState(model, 23, false);
        int[][] windows = TinyModels.windows(model, 2, 16, 24);
        TrainOptions base = options(0.0, false);
        Map<String, INDArray> g0 = TrainStep.evaluate(model, state, windows, base).grads();
        Map<String, INDArray> g1 = TrainStep.evaluate(model, state, windows, base.withAuxLossCoef(1.0)).grads();
        DoubleSupplier aux = () -> TrainStep.losses(model, state, windows, base).aux();
        double largest = 0;
        for (String key : state.params().keySet()) {
            if (key.contains(".w1.") || key.contains(".w3.")) {
                continue;
            }
            INDArray dAux = g1.get(key).sub(g0.get(key));
            largest = Math.max(largest, check("aux: " + key, state.params().get(key), dAux, aux, new Random(25)));
        }
        assertTrue(largest > 1e-3, "the aux gradient is (near) zero everywhere: " + largest);
    }

    private static void checkTotalLoss(String dir, double coef, long seed) {
        checkTotalLoss(dir, coef, seed, false);
    }

    private static void checkTotalLoss(String dir, double coef, long seed, boolean shared) {
        MoeTransformer model = TinyModels.load(dir, DataType.DOUBLE);
        TrainState state = perturbedState(model, seed, shared);
        int[][] windows = TinyModels.windows(model, 2, 16, seed + 1);
        TrainOptions opts = options(coef, shared);
        TrainStep.Evaluation e = TrainStep.evaluate(model, state, windows, opts);
        assertEquals(state.params().keySet(), e.grads().keySet());
        DoubleSupplier loss = () -> TrainStep.losses(model, state, windows, opts).loss();
        Random rnd = new Random(seed + 2);
        int checked = 0;
        for (String key : state.params().keySet()) {
            check(dir + ": " + key, state.params().get(key), e.grads().get(key), loss, rnd);
            checked++;
        }
        long moeLayers = model.layers().stream().filter(l -> l.isMoe()).count();
        int routerBias = model.config().clamped_experts ? 1 : 0;
        assertEquals(moeLayers * ((shared ? 13 : 7) + routerBias), checked,
                "3 targets × (A, B) (routed, and shared when adapted) + router (+ its bias) per MoE layer");
    }

    /** All targets, rank 4, α 8, router trained; B Gaussian(0, 0.05²) so that A has a gradient. */
    private static TrainState perturbedState(MoeTransformer model, long seed, boolean shared) {
        TrainState state = TrainState.init(model, spec(shared), seed, DataType.DOUBLE);
        Random rnd = new Random(seed);
        for (Map.Entry<String, INDArray> e : state.params().entrySet()) {
            if (e.getKey().endsWith(".lora_B")) {
                e.setValue(GradientCheck.gaussian(rnd, DataType.DOUBLE, 0.05, e.getValue().shape()));
            }
        }
        return state;
    }

    private static LoraSpec spec(boolean shared) {
        return new LoraSpec(EnumSet.allOf(Projection.class), 4, 8.0, true, shared);
    }

    private static TrainOptions options(double coef, boolean shared) {
        return TrainOptions.defaults(spec(shared), new LrSchedule(1e-3, 0, 10), 7).withAuxLossCoef(coef);
    }

    /** @return the largest |analytic| among the checked entries */
    static double check(String name, INDArray param, INDArray analytic, DoubleSupplier loss, Random rnd) {
        double[] g = analytic.dup('c').data().asDouble();
        List<Integer> entries = new ArrayList<>();
        for (int n = 0; n < 2; n++) {
            int best = -1;
            for (int i = 0; i < g.length; i++) {
                if (!entries.contains(i) && (best < 0 || Math.abs(g[i]) > Math.abs(g[best]))) {
                    best = i;
                }
            }
            entries.add(best);
        }
        while (entries.size() < ENTRIES) {
            entries.add(rnd.nextInt(g.length));
        }
        double largest = 0;
        for (int i : entries) {
            double numeric = GradientCheck.centralDifference(param, i, GradientCheck.H, loss);
            double error = Math.abs(numeric - g[i]) / Math.max(1.0, Math.abs(g[i]));
            assertTrue(error <= GradientCheck.TOLERANCE, name + "[" + i + "]: analytic " + g[i] + ", numeric "
                    + numeric + ", error " + error);
            largest = Math.max(largest, Math.abs(g[i]));
        }
        System.out.printf("whole-model check %-55s largest |g| %.3e%n", name, largest);
        return largest;
    }
}
