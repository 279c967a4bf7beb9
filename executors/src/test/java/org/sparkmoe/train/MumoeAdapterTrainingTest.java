package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.function.DoubleSupplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.LinearInputs;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.OwnedArrays;
import org.sparkmoe.mumoe.CpMumoeNaive;
import org.sparkmoe.mumoe.GateActivation;
import org.sparkmoe.mumoe.CpWeights;
import org.sparkmoe.mumoe.MumoeForm;

/**
 * μMoE adapters through {@link TrainStep} on the tiny Mixtral: the state's keys and zero output factors, the model
 * unchanged at the start, the adapted forward equal to the base plus the layer's own output (float64 reference),
 * float64 finite differences through the model-level wiring (attention projections, the MoE block's output and,
 * on Qwen2-MoE, a dense MLP's),
 * and training that lowers the loss, bit for bit the same twice; for a hierarchical CP adapter (experts 4·4, one gate
 * per level) the same forward against {@link CpMumoeNaive}'s materialised W and the same training; for a hierarchical
 * TR adapter (experts 4·4, a gate and an expert core per level) the finite differences and the same training.
 */
class MumoeAdapterTrainingTest {
    private static final String L0 = "model.layers.0.";

    private static LoraSpec spec(MumoeForm form, int experts, int[] ranks, String targets) {
        return LoraSpec.mumoe(new MumoeConfig(form, experts, ranks, MumoeConfig.parseTargets(targets, "test")));
    }

    private static LoraSpec cp(String targets) {
        return spec(MumoeForm.CP, 16, new int[] {4}, targets);
    }

    /** A hierarchical CP adapter: N = 4·4 experts, a gate per level, rank 4. */
    private static LoraSpec levels(String targets) {
        return LoraSpec.mumoe(new MumoeConfig(MumoeForm.CP, new int[] {4, 4}, new int[] {4},
                MumoeConfig.parseTargets(targets, "test")));
    }

    private static LoraSpec tr(String targets) {
        return spec(MumoeForm.TR, 16, new int[] {2, 3, 2}, targets);
    }

    /** A hierarchical TR adapter: N = 4·4 experts, a gate and an expert core per level, ranks (2, 3, 2, 2). */
    private static LoraSpec trLevels(String targets) {
        return LoraSpec.mumoe(new MumoeConfig(MumoeForm.TR, new int[] {4, 4}, new int[] {2, 3, 2, 2},
                MumoeConfig.parseTargets(targets, "test")));
    }

    /** cp, tr, levels (hierarchical CP) or tr-levels. */
    private static LoraSpec kind(String kind, String targets) {
        return switch (kind) {
            case "cp" -> cp(targets);
            case "tr" -> tr(targets);
            case "levels" -> levels(targets);
            case "tr-levels" -> trLevels(targets);
            default -> throw new IllegalArgumentException("unknown adapter kind " + kind);
        };
    }

    @Test
    void stateHoldsEachSitesGateAndFactorsWithTheOutputFactorZero() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        LoraSpec spec = cp("moe,q_proj");
        TrainState s = TrainState.init(model, spec, 9, DataType.FLOAT);
        List<String> keys = List.copyOf(s.params().keySet());
        String q = L0 + "self_attn.q_proj.mumoe.";
        String moe = L0 + "block_sparse_moe.mumoe.";
        assertEquals(List.of(q + "gate.0", q + "expert.0", q + "in", q + "out", moe + "gate.0", moe + "expert.0",
                moe + "in", moe + "out"), keys.subList(0, 8));
        assertEquals(8L * model.layers().size(), keys.size());
        assertEquals(TrainState.keys(model, spec), keys);
        long d = model.config().hidden_size;
        long heads = (long) model.config().num_attention_heads * model.config().head_dim;
        assertArrayEquals(new long[] {d, 16}, s.params().get(q + "gate.0").shape());
        assertArrayEquals(new long[] {16, 4}, s.params().get(q + "expert.0").shape());
        assertArrayEquals(new long[] {d, 4}, s.params().get(q + "in").shape());
        assertArrayEquals(new long[] {heads, 4}, s.params().get(q + "out").shape());
        assertEquals(0.0, s.params().get(q + "out").amaxNumber().doubleValue(), 0.0);
        assertTrue(s.params().get(q + "in").amaxNumber().doubleValue() > 0);
        TrainState t = TrainState.init(model, tr("k_proj"), 9, DataType.FLOAT);
        String k = L0 + "self_attn.k_proj.mumoe.";
        long kv = (long) model.config().num_key_value_heads * model.config().head_dim;
        assertArrayEquals(new long[] {2, 16, 3}, t.params().get(k + "core.expert").shape());
        assertArrayEquals(new long[] {3, d, 2}, t.params().get(k + "core.in").shape());
        assertArrayEquals(new long[] {2, kv, 2}, t.params().get(k + "core.out").shape());
        assertEquals(0.0, t.params().get(k + "core.out").amaxNumber().doubleValue(), 0.0);
    }

    @ParameterizedTest
    @CsvSource({"CP", "TR"})
    void theAdapterStartsAsTheBaseModel(MumoeForm form) {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        LoraSpec spec = form == MumoeForm.CP ? cp("q_proj,k_proj,v_proj,o_proj,moe")
                : tr("q_proj,k_proj,v_proj,o_proj,moe");
        TrainState s = TrainState.init(model, spec, 3, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 2, 8, 4);
        MoeTransformer adapted = model.withTerms(spec.mumoe().terms(model.config(), s.params()), new OwnedArrays());
        assertArrayEquals(model.logits(windows).data().asFloat(), adapted.logits(windows).data().asFloat(), 0f);
    }

    /**
     * With non-zero factors beside every MoE block, the input of layer 1 moves from the base's by exactly layer 0's
     * μMoE output on layer 0's MoE input (both of which the base computes): checked against {@link CpMumoeNaive},
     * which builds W [N, D, D] in float64 from the same factors.
     */
    @Test
    void theAdaptedForwardIsTheBasePlusTheLayersOwnOutput() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        LoraSpec spec = cp("moe");
        TrainState s = TrainState.init(model, spec, 5, DataType.FLOAT);
        String moe = L0 + "block_sparse_moe.mumoe.";
        s.params().put(moe + "out", GradientCheck.gaussian(new Random(6), DataType.FLOAT, 0.5,
                s.params().get(moe + "out").shape()));
        int[][] windows = TinyModels.windows(model, 2, 8, 7);
        MoeTransformer adapted = model.withTerms(spec.mumoe().terms(model.config(), s.params()), new OwnedArrays());
        int topK = model.config().num_experts_per_tok;
        ForwardOutput base = model.forward(windows, topK, true);
        ForwardOutput with = adapted.forward(windows, topK, true);

        CpWeights w64 = new CpWeights(List.of(s.params().get(moe + "gate.0").castTo(DataType.DOUBLE)),
                List.of(s.params().get(moe + "expert.0").castTo(DataType.DOUBLE)),
                s.params().get(moe + "in").castTo(DataType.DOUBLE), s.params().get(moe + "out").castTo(DataType.DOUBLE));
        INDArray expected = new CpMumoeNaive(w64, GateActivation.SOFTMAX).forward(base.routerInputs().get(0).castTo(DataType.DOUBLE)).y();
        INDArray actual = with.hiddenStates().get(1).castTo(DataType.DOUBLE)
                .sub(base.hiddenStates().get(1).castTo(DataType.DOUBLE));
        double scale = expected.amaxNumber().doubleValue();
        assertTrue(scale > 0.1, "the term is visible: max |y| " + scale);
        double err = actual.sub(expected).amaxNumber().doubleValue();
        System.out.printf("μMoE beside the MoE block: max |adapted − base − μMoE(float64)| %.3e of max |μMoE| %.3e%n",
                err, scale);
        assertTrue(err <= 1e-5 * Math.max(1, scale) + 1e-5, "max |Δ| " + err + " of max |y| " + scale);
    }

    /**
     * {@link #theAdaptedForwardIsTheBasePlusTheLayersOwnOutput} for a hierarchical adapter: the state holds a gate and
     * an expert factor per level, and layer 1's input moves by {@link CpMumoeNaive}'s output over the materialised
     * W [4·4, D, D] (float64) on layer 0's MoE input.
     */
    @Test
    void aHierarchicalAdaptersForwardIsTheBasePlusTheMaterialisedLayersOutput() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        LoraSpec spec = levels("moe");
        TrainState s = TrainState.init(model, spec, 5, DataType.FLOAT);
        String moe = L0 + "block_sparse_moe.mumoe.";
        assertEquals(List.of(moe + "gate.0", moe + "gate.1", moe + "expert.0", moe + "expert.1", moe + "in",
                moe + "out"), List.copyOf(s.params().keySet()).subList(0, 6));
        assertEquals(0.0, s.params().get(moe + "out").amaxNumber().doubleValue(), 0.0);
        s.params().put(moe + "out", GradientCheck.gaussian(new Random(6), DataType.FLOAT, 0.5,
                s.params().get(moe + "out").shape()));
        int[][] windows = TinyModels.windows(model, 2, 8, 7);
        MoeTransformer adapted = model.withTerms(spec.mumoe().terms(model.config(), s.params()), new OwnedArrays());
        int topK = model.config().num_experts_per_tok;
        ForwardOutput base = model.forward(windows, topK, true);
        ForwardOutput with = adapted.forward(windows, topK, true);

        List<INDArray> gates = List.of(s.params().get(moe + "gate.0").castTo(DataType.DOUBLE),
                s.params().get(moe + "gate.1").castTo(DataType.DOUBLE));
        List<INDArray> experts = List.of(s.params().get(moe + "expert.0").castTo(DataType.DOUBLE),
                s.params().get(moe + "expert.1").castTo(DataType.DOUBLE));
        CpWeights w64 = new CpWeights(gates, experts, s.params().get(moe + "in").castTo(DataType.DOUBLE),
                s.params().get(moe + "out").castTo(DataType.DOUBLE));
        INDArray expected = new CpMumoeNaive(w64, GateActivation.SOFTMAX).forward(base.routerInputs().get(0).castTo(DataType.DOUBLE)).y();
        INDArray actual = with.hiddenStates().get(1).castTo(DataType.DOUBLE)
                .sub(base.hiddenStates().get(1).castTo(DataType.DOUBLE));
        double scale = expected.amaxNumber().doubleValue();
        assertTrue(scale > 0.1, "the term is visible: max |y| " + scale);
        double err = actual.sub(expected).amaxNumber().doubleValue();
        System.out.printf("hierarchical μMoE beside the MoE block: max |adapted − base − μMoE(float64)| %.3e of max "
                + "|μMoE| %.3e%n", err, scale);
        assertTrue(err <= 1e-5 * Math.max(1, scale) + 1e-5, "max |Δ| " + err + " of max |y| " + scale);
    }

    /**
     * Float64 central differences of the training loss ({@link WholeModelGradientCheckTest#check}: the two largest
     * and one random entry of every tensor) through the model-level wiring, for a term of each kind: beside the
     * attention's input projections (q_proj, v_proj), its output projection (o_proj) and the MoE block (moe), in both
     * forms. The output factors are made non-zero (they start at zero, which leaves every other gradient zero).
     */
    @ParameterizedTest
    @CsvSource({"cp, 'q_proj,o_proj,moe'", "tr, 'v_proj,o_proj,moe'", "tr-levels, 'o_proj,moe'"})
    void gradientsThroughTheModelMatchFiniteDifferences(String kind, String targets) {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.DOUBLE);
        LoraSpec spec = kind(kind, targets);
        MumoeForm form = spec.mumoe().form();
        TrainState state = TrainState.init(model, spec, 31, DataType.DOUBLE);
        Random rnd = new Random(32);
        for (Map.Entry<String, INDArray> e : state.params().entrySet()) {
            if (e.getKey().endsWith(form.outputName())) {
                e.setValue(GradientCheck.gaussian(rnd, DataType.DOUBLE, 0.3, e.getValue().shape()));
            }
        }
        int[][] windows = TinyModels.windows(model, 2, 8, 33);
        TrainOptions opts = TrainOptions.defaults(spec, new LrSchedule(1e-3, 0, 10), 7);
        TrainStep.Evaluation e = TrainStep.evaluate(model, state, windows, opts);
        assertEquals(state.params().keySet(), e.grads().keySet());
        DoubleSupplier loss = () -> TrainStep.losses(model, state, windows, opts).loss();
        Random pick = new Random(34);
        for (String key : state.params().keySet()) {
            double largest = WholeModelGradientCheckTest.check(form + ": " + key, state.params().get(key),
                    e.grads().get(key), loss, pick);
            assertTrue(largest > 0, key + " has a gradient");
        }
    }

    /**
     * On a model of CP- or TR-form experts ({@code surgery lowrank --form cp|tr}, frozen): float64 central differences
     * of the training loss for every tensor of a CP adapter beside q_proj, o_proj and the MoE blocks, whose gradients
     * reach the earlier layers' terms through the experts' backward to their input; and LoRA on such a model refused
     * in one line.
     */
    @ParameterizedTest(name = "{0} experts, rank {1}")
    @CsvSource({"cp, 6", "tr, 3"})
    void besideFrozenCpOrTrExpertsGradientsMatchFiniteDifferences(String form, int rank) {
        MoeTransformer model = form.equals("cp") ? TinyModels.cpMixtral(rank, DataType.DOUBLE)
                : TinyModels.trMixtral(rank, DataType.DOUBLE);
        LoraSpec spec = cp("q_proj,o_proj,moe");
        TrainState state = TrainState.init(model, spec, 41, DataType.DOUBLE);
        Random rnd = new Random(42);
        for (Map.Entry<String, INDArray> e : state.params().entrySet()) {
            if (e.getKey().endsWith(MumoeForm.CP.outputName())) {
                e.setValue(GradientCheck.gaussian(rnd, DataType.DOUBLE, 0.3, e.getValue().shape()));
            }
        }
        int[][] windows = TinyModels.windows(model, 2, 8, 43);
        TrainOptions opts = TrainOptions.defaults(spec, new LrSchedule(1e-3, 0, 10), 7);
        TrainStep.Evaluation e = TrainStep.evaluate(model, state, windows, opts);
        assertEquals(state.params().keySet(), e.grads().keySet());
        DoubleSupplier loss = () -> TrainStep.losses(model, state, windows, opts).loss();
        Random pick = new Random(44);
        for (String key : state.params().keySet()) {
            double largest = WholeModelGradientCheckTest.check(form + " experts: " + key, state.params().get(key),
                    e.grads().get(key), loss, pick);
            assertTrue(largest > 0, key + " has a gradient");
        }
        Exception lora = assertThrows(IllegalArgumentException.class, () -> TrainState.init(model,
                new LoraSpec(Set.of(org.sparkmoe.io.CheckpointLayout.Projection.GATE), 4, 8, false), 41,
                DataType.DOUBLE));
        assertEquals(TrainState.CP_TR_TRAINS, lora.getMessage());
    }

    /**
     * Beside a dense MLP (Qwen2-MoE's layer 1): the adapter has one mlp site, on the dense layer, and layer 1's output
     * moves from the base's by exactly the term's output on that layer's MLP input (which the base shows through
     * {@link LinearInputs}), checked against {@link CpMumoeNaive} in float64.
     */
    @Test
    void besideADenseMlpTheAdaptedForwardIsTheBasePlusTheLayersOwnOutput() {
        MoeTransformer model = TinyModels.load(TinyModels.QWEN, DataType.FLOAT);
        assertTrue(!model.layers().get(1).isMoe() && model.layers().get(0).isMoe(), "layer 1 is Qwen2-MoE's dense one");
        LoraSpec spec = cp("mlp");
        TrainState s = TrainState.init(model, spec, 5, DataType.FLOAT);
        String mlp = "model.layers.1.mlp.mumoe.";
        assertEquals(List.of(mlp + "gate.0", mlp + "expert.0", mlp + "in", mlp + "out"), List.copyOf(s.params().keySet()));
        s.params().put(mlp + "out", GradientCheck.gaussian(new Random(6), DataType.FLOAT, 0.5,
                s.params().get(mlp + "out").shape()));
        int[][] windows = TinyModels.windows(model, 2, 8, 7);
        MoeTransformer adapted = model.withTerms(spec.mumoe().terms(model.config(), s.params()), new OwnedArrays());
        int topK = model.config().num_experts_per_tok;
        INDArray[] mlpInput = new INDArray[1];                                          // [B·S, D]
        LinearInputs capture = (site, rows) -> {
            if (site == LinearInputs.Site.FFN_IN) {
                mlpInput[0] = rows.dup();
            }
        };
        ForwardOutput base = model.forward(windows, topK, true, layer -> layer == 1 ? capture : LinearInputs.NONE);
        ForwardOutput with = adapted.forward(windows, topK, true);

        CpWeights w64 = new CpWeights(List.of(s.params().get(mlp + "gate.0").castTo(DataType.DOUBLE)),
                List.of(s.params().get(mlp + "expert.0").castTo(DataType.DOUBLE)),
                s.params().get(mlp + "in").castTo(DataType.DOUBLE), s.params().get(mlp + "out").castTo(DataType.DOUBLE));
        INDArray expected = new CpMumoeNaive(w64, GateActivation.SOFTMAX).forward(mlpInput[0].castTo(DataType.DOUBLE)).y();
        INDArray actual = with.hiddenStates().get(2).castTo(DataType.DOUBLE)
                .sub(base.hiddenStates().get(2).castTo(DataType.DOUBLE));
        assertArrayEquals(base.hiddenStates().get(1).data().asFloat(), with.hiddenStates().get(1).data().asFloat(),
                "layer 0 (MoE, no term) is the base's");
        double scale = expected.amaxNumber().doubleValue();
        assertTrue(scale > 0.1, "the term is visible: max |y| " + scale);
        double err = actual.sub(expected).amaxNumber().doubleValue();
        System.out.printf("μMoE beside a dense MLP: max |adapted − base − μMoE(float64)| %.3e of max |μMoE| %.3e%n",
                err, scale);
        assertTrue(err <= 1e-5 * Math.max(1, scale) + 1e-5, "max |Δ| " + err + " of max |y| " + scale);
    }

    /** {@link #gradientsThroughTheModelMatchFiniteDifferences} on Qwen2-MoE, beside its dense MLP and MoE blocks. */
    @ParameterizedTest
    @CsvSource({"CP", "TR"})
    void gradientsBesideDenseMlpsMatchFiniteDifferences(MumoeForm form) {
        MoeTransformer model = TinyModels.load(TinyModels.QWEN, DataType.DOUBLE);
        LoraSpec spec = form == MumoeForm.CP ? cp("mlp,moe") : tr("mlp,moe");
        TrainState state = TrainState.init(model, spec, 41, DataType.DOUBLE);
        assertTrue(state.params().keySet().stream().anyMatch(k -> k.startsWith("model.layers.1.mlp.mumoe.")));
        Random rnd = new Random(42);
        for (Map.Entry<String, INDArray> e : state.params().entrySet()) {
            if (e.getKey().endsWith(form.outputName())) {
                e.setValue(GradientCheck.gaussian(rnd, DataType.DOUBLE, 0.3, e.getValue().shape()));
            }
        }
        int[][] windows = TinyModels.windows(model, 2, 8, 43);
        TrainOptions opts = TrainOptions.defaults(spec, new LrSchedule(1e-3, 0, 10), 7);
        TrainStep.Evaluation e = TrainStep.evaluate(model, state, windows, opts);
        assertEquals(state.params().keySet(), e.grads().keySet());
        DoubleSupplier loss = () -> TrainStep.losses(model, state, windows, opts).loss();
        Random pick = new Random(44);
        for (String key : state.params().keySet()) {
            double largest = WholeModelGradientCheckTest.check(form + ": " + key, state.params().get(key),
                    e.grads().get(key), loss, pick);
            assertTrue(largest > 0, key + " has a gradient");
        }
    }

    @ParameterizedTest
    @CsvSource({"cp", "tr", "levels", "tr-levels"})
    void fewStepsLowerTheLossTheSameBitsTwice(String kind) {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        String targets = "q_proj,v_proj,o_proj,moe";
        LoraSpec spec = kind(kind, targets);
        int[][] windows = TinyModels.windows(model, 2, 16, 2);
        TrainOptions opts = TrainOptions.defaults(spec, new LrSchedule(1e-2, 0, 8), 3);
        TrainState a = TrainState.init(model, spec, 1, DataType.FLOAT);
        TrainState b = TrainState.init(model, spec, 1, DataType.FLOAT);
        StepResult first = null;
        StepResult last = null;
        for (int i = 0; i < 6; i++) {
            last = TrainStep.run(model, a, windows, opts);
            assertEquals(last, TrainStep.run(model, b, windows, opts), "step " + i);
            first = first == null ? last : first;
        }
        assertTrue(last.ceLoss() < first.ceLoss() - 0.1, "cross-entropy " + first.ceLoss() + " → " + last.ceLoss());
        for (String key : a.params().keySet()) {
            assertArrayEquals(a.params().get(key).data().asFloat(), b.params().get(key).data().asFloat(), key);
            assertArrayEquals(a.m().get(key).data().asFloat(), b.m().get(key).data().asFloat(), key);
            assertArrayEquals(a.v().get(key).data().asFloat(), b.v().get(key).data().asFloat(), key);
        }
    }

    @Test
    void refusesLoraOptionsBesideAMumoeAdapterAndUnknownTargets() {
        MumoeConfig c = new MumoeConfig(MumoeForm.CP, 4, new int[] {2}, Set.of(org.sparkmoe.model.AdapterTerms.Site.MOE));
        IllegalArgumentException router = assertThrows(IllegalArgumentException.class,
                () -> new LoraSpec(Set.of(), 1, 1.0, true, false, c));
        assertTrue(router.getMessage().contains("--train-router"), router.getMessage());
        IllegalArgumentException dense = assertThrows(IllegalArgumentException.class,
                () -> MumoeConfig.parseTargets("moe,down_proj", "--mumoe-targets"));
        assertEquals("--mumoe-targets: unknown μMoE target 'down_proj', expected q_proj, k_proj, v_proj, o_proj, moe "
                + "or mlp (beside a dense MLP's single projections is not built: mlp puts one beside the whole MLP)",
                dense.getMessage());
        MoeTransformer mixtral = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        IllegalArgumentException noDense = assertThrows(IllegalArgumentException.class,
                () -> TrainState.init(mixtral, cp("q_proj,mlp"), 1, DataType.FLOAT));
        assertEquals("--mumoe-targets mlp: the model has no dense MLP layer (all its layers are MoE layers; use moe)",
                noDense.getMessage());
        IllegalArgumentException ranks = assertThrows(IllegalArgumentException.class,
                () -> new MumoeConfig(MumoeForm.TR, 4, new int[] {2}, Set.of(org.sparkmoe.model.AdapterTerms.Site.MOE)));
        assertTrue(ranks.getMessage().contains("three ranks r1,r2,r3"), ranks.getMessage());
        IllegalArgumentException trLevels = assertThrows(IllegalArgumentException.class, () -> new MumoeConfig(
                MumoeForm.TR, new int[] {4, 4}, new int[] {2, 2, 2}, Set.of(org.sparkmoe.model.AdapterTerms.Site.MOE)));
        assertEquals("--mumoe-rank: μMoE tr takes 4 ranks r1,...,r4 for 2 expert levels (one per core of the ring) "
                + "≥ 1, got [2, 2, 2]", trLevels.getMessage());
    }
}
