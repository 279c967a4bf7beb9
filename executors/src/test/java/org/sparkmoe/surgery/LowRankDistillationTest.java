package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.experts.CpExperts;
import org.sparkmoe.experts.CpFactors;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.experts.ExpertFfn;
import org.sparkmoe.experts.ExpertGradients;
import org.sparkmoe.experts.LowRankAdapters;
import org.sparkmoe.experts.LowRankFactorised;
import org.sparkmoe.experts.LowRankWeights;
import org.sparkmoe.experts.TrExperts;
import org.sparkmoe.experts.TrFactors;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LowRankDistillationTest {
    private static final int D = 8;
    private static final int I = 6;
    private static final int E = 4;

    /** dL/dθ of the relative squared error for every LoRA factor, against central differences in float64. */
    @Test
    void lossGradientMatchesCentralDifferences() {
        for (boolean normalize : new boolean[] {true, false}) {
            LowRankWeights w = LowRankWeights.random(D, I, E, 2, 1.0, 0.5, DataType.DOUBLE, normalize ? 11 : 12);
            Random rnd = new Random(5);
            INDArray gate = GradientCheck.gaussian(rnd, DataType.DOUBLE, 1 / Math.sqrt(D), E, D);
            INDArray x = GradientCheck.gaussian(rnd, DataType.DOUBLE, 1.0, 7, D);
            INDArray y = GradientCheck.gaussian(rnd, DataType.DOUBLE, 0.3, 7, D);
            MoeBlock student = new MoeBlock(new Router(gate), RouterOptions.of(RoutingRule.softmaxTopK(2, normalize)),
                    new LowRankFactorised(w, new Nd4jGroupedGemm()), null);
            DistillLoss.Result r = DistillLoss.gradient(student, x, y);
            assertEquals(DistillLoss.value(student, x, y), r.loss(), 1e-12);
            LowRankAdapters ad = w.adapters();
            ExpertGradients g = r.grads();
            String[] names = {"a1", "b1", "a3", "b3", "a2", "b2"};
            INDArray[] params = {ad.a1, ad.b1, ad.a3, ad.b3, ad.a2, ad.b2};
            INDArray[] grads = {g.gate().dA(), g.gate().dB(), g.up().dA(), g.up().dB(), g.down().dA(), g.down().dB()};
            for (int j = 0; j < params.length; j++) {
                GradientCheck.check("distill d" + names[j] + (normalize ? " renormalised" : ""), params[j],
                        grads[j].dup('c'), () -> DistillLoss.value(student, x, y));
            }
        }
    }

    @Test
    void distillationLowersTheLayersErrorDeterministically() {
        ModelConfig c = config();
        SurgeryFixtures.MapSource source = randomExperts(c, 3);
        LayerResult lowRank = new LowRankSurgery(c, 2, new double[][] {MergeWeights.uniform(E)}).apply(source, 0, 0);
        INDArray x = GradientCheck.gaussian(new Random(4), DataType.FLOAT, 1.0, 512, D);
        DistillOptions opts = new DistillOptions(300, 1e-2, 10, 64, 0.0, 42);
        LayerResult a = LowRankDistillation.distill(source, c, 0, lowRank, x, opts);
        double before = a.metrics().get("distill_rel_mse_before");
        double after = a.metrics().get("distill_rel_mse_after");
        assertTrue(before > 0.05, a.metrics().toString());
        assertTrue(after < 0.5 * before, a.metrics().toString());
        assertEquals(512.0, a.metrics().get("distill_tokens"));
        assertEquals(new ArrayList<>(lowRank.tensors().keySet()), new ArrayList<>(a.tensors().keySet()));
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        for (Projection p : Projection.values()) {
            assertEquals(lowRank.tensors().get(layout.sharedBase(0, p)), a.tensors().get(layout.sharedBase(0, p)),
                    "the base stays frozen");
            assertTrue(!lowRank.tensors().get(layout.stackedLoraB(0, p)).equals(a.tensors().get(layout.stackedLoraB(0, p))),
                    "the factors are trained");
        }
        LayerResult b = LowRankDistillation.distill(source, c, 0, lowRank, x, opts);
        for (Map.Entry<String, INDArray> e : a.tensors().entrySet()) {
            assertEquals(e.getValue(), b.tensors().get(e.getKey()), e.getKey() + " is reproducible");
        }
        // the before error is the low-rank layer's, measured independently
        LowRankWeights w = new LowRankWeights(lowRank.tensors().get(layout.sharedBase(0, Projection.GATE)),
                lowRank.tensors().get(layout.sharedBase(0, Projection.UP)),
                lowRank.tensors().get(layout.sharedBase(0, Projection.DOWN)),
                new LowRankAdapters(lowRank.tensors().get(layout.stackedLoraA(0, Projection.GATE)),
                        lowRank.tensors().get(layout.stackedLoraB(0, Projection.GATE)),
                        lowRank.tensors().get(layout.stackedLoraA(0, Projection.UP)),
                        lowRank.tensors().get(layout.stackedLoraB(0, Projection.UP)),
                        lowRank.tensors().get(layout.stackedLoraA(0, Projection.DOWN)),
                        lowRank.tensors().get(layout.stackedLoraB(0, Projection.DOWN)), 1.0));
        MoeBlock student = new MoeBlock(new Router(source.readFloat(layout.routerGate(0))),
                RouterOptions.of(RoutingRule.softmaxTopK(2, true)), new LowRankFactorised(w, new Nd4jGroupedGemm()), null);
        INDArray y = LowRankDistillation.teacher(source, c, 0, new Router(source.readFloat(layout.routerGate(0))), x,
                new Nd4jGroupedGemm());
        assertEquals(before, DistillLoss.value(student, x, y), 1e-6 * before);
    }

    /** Training that ends worse than it started (here a learning rate of 30) is dropped: the layer keeps its start. */
    @Test
    void distillationThatEndsWorseKeepsTheStartingFactors() {
        ModelConfig c = config();
        SurgeryFixtures.MapSource source = randomExperts(c, 3);
        LayerResult lowRank = new LowRankSurgery(c, 2, new double[][] {MergeWeights.uniform(E)}).apply(source, 0, 0);
        INDArray x = GradientCheck.gaussian(new Random(4), DataType.FLOAT, 1.0, 512, D);
        LayerResult a = LowRankDistillation.distill(source, c, 0, lowRank, x,
                new DistillOptions(20, 30, 0, 64, 0.0, 42));
        double before = a.metrics().get("distill_rel_mse_before");
        assertTrue(!(a.metrics().get("distill_rel_mse_trained") <= before), a.metrics().toString());
        assertEquals(1.0, a.metrics().get("distill_kept_start"));
        assertEquals(before, a.metrics().get("distill_rel_mse_after"));
        for (Map.Entry<String, INDArray> e : lowRank.tensors().entrySet()) {
            assertEquals(e.getValue(), a.tensors().get(e.getKey()), e.getKey() + " is the starting tensor");
        }
        // a learning rate that helps: the trained factors are kept
        LayerResult b = LowRankDistillation.distill(source, c, 0, lowRank, x,
                new DistillOptions(100, 1e-2, 10, 64, 0.0, 42));
        assertEquals(0.0, b.metrics().get("distill_kept_start"));
        assertEquals(b.metrics().get("distill_rel_mse_trained"), b.metrics().get("distill_rel_mse_after"));
    }

    /** The cp form: every CP factor trained, the layer's error lowered, the same bytes twice, the rest untouched. */
    @Test
    void cpDistillationTrainsEveryFactorDeterministically() {
        ModelConfig c = config();
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        distillationTrainsEveryTensorDeterministically(c, new LowRankCpSurgery(c, 6, 20, 0.0, 7), t -> {
            CpFactors[] f = new CpFactors[3];
            for (Projection p : Projection.values()) {
                f[p.ordinal()] = new CpFactors(t.get(layout.cpFactor(0, p, CpFactor.EXPERTS)),
                        t.get(layout.cpFactor(0, p, CpFactor.IN)), t.get(layout.cpFactor(0, p, CpFactor.OUT)));
            }
            return new CpExperts(f[Projection.GATE.ordinal()], f[Projection.UP.ordinal()],
                    f[Projection.DOWN.ordinal()], new Nd4jGroupedGemm());
        });
    }

    /** The tr form: every TR core trained, the layer's error lowered, the same bytes twice, the rest untouched. */
    @Test
    void trDistillationTrainsEveryCoreDeterministically() {
        ModelConfig c = config();
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        distillationTrainsEveryTensorDeterministically(c, new LowRankTrSurgery(c, 3, 20, 0.0, 7), t -> {
            TrFactors[] f = new TrFactors[3];
            for (Projection p : Projection.values()) {
                f[p.ordinal()] = new TrFactors(t.get(layout.trCore(0, p, TrCore.EXPERTS)),
                        t.get(layout.trCore(0, p, TrCore.IN)), t.get(layout.trCore(0, p, TrCore.OUT)));
            }
            return new TrExperts(f[Projection.GATE.ordinal()], f[Projection.UP.ordinal()],
                    f[Projection.DOWN.ordinal()], new Nd4jGroupedGemm());
        });
    }

    /**
     * Layer 0 converted by {@code surgery} (every tensor of the form trained) and distilled: the error halves, every
     * tensor changes, a second run gives the same bytes, and the before error is that of {@code experts} built from
     * the converted tensors, measured independently.
     */
    private static void distillationTrainsEveryTensorDeterministically(ModelConfig c, LowRankAlsSurgery surgery,
            Function<Map<String, INDArray>, ExpertFfn> experts) {
        SurgeryFixtures.MapSource source = randomExperts(c, 3);
        List<LayerResult> parts = new ArrayList<>();
        for (int part = 0; part < surgery.parts(); part++) {
            parts.add(surgery.applyPart(source, 0, 0, part));
        }
        LayerResult lowRank = LayerResult.merge(parts);
        INDArray x = GradientCheck.gaussian(new Random(4), DataType.FLOAT, 1.0, 512, D);
        DistillOptions opts = new DistillOptions(300, 1e-2, 10, 64, 0.0, 42);
        LayerResult a = LowRankDistillation.distill(source, c, 0, lowRank, x, opts);
        double before = a.metrics().get("distill_rel_mse_before");
        double after = a.metrics().get("distill_rel_mse_after");
        assertTrue(before > 0.05, a.metrics().toString());
        assertTrue(after < 0.5 * before, a.metrics().toString());
        assertEquals(new ArrayList<>(lowRank.tensors().keySet()), new ArrayList<>(a.tensors().keySet()));
        assertEquals(new ArrayList<>(lowRank.tensors().keySet()),
                new ArrayList<>(LowRankDistillation.trainedTensors(c, 0, a).keySet()), "every tensor is trained");
        for (Map.Entry<String, INDArray> e : lowRank.tensors().entrySet()) {
            assertTrue(!e.getValue().equals(a.tensors().get(e.getKey())), e.getKey() + " is trained");
        }
        LayerResult b = LowRankDistillation.distill(source, c, 0, lowRank, x, opts);
        for (Map.Entry<String, INDArray> e : a.tensors().entrySet()) {
            assertEquals(e.getValue(), b.tensors().get(e.getKey()), e.getKey() + " is reproducible");
        }
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        MoeBlock student = new MoeBlock(new Router(source.readFloat(layout.routerGate(0))),
                RouterOptions.of(RoutingRule.softmaxTopK(2, true)), experts.apply(lowRank.tensors()), null);
        INDArray y = LowRankDistillation.teacher(source, c, 0, new Router(source.readFloat(layout.routerGate(0))), x,
                new Nd4jGroupedGemm());
        assertEquals(before, DistillLoss.value(student, x, y), 1e-6 * before);
    }

    @Test
    void badOptionsNameTheFlag() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new DistillOptions(10, 1e-3, 11, 64, 0, 1));
        assertEquals("--distill-warmup must be in [0, 10] (the steps), got 11", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new DistillOptions(0, 1e-3, 0, 64, 0, 1));
        assertThrows(IllegalArgumentException.class, () -> new DistillOptions(5, 0, 0, 64, 0, 1));
    }

    private static ModelConfig config() {
        return ModelConfig.parse("{\"model_type\":\"mixtral\",\"architectures\":[\"MixtralForCausalLM\"],"
                + "\"vocab_size\":5,\"hidden_size\":" + D + ",\"intermediate_size\":" + I + ",\"num_hidden_layers\":1,"
                + "\"num_attention_heads\":1,\"num_key_value_heads\":1,\"head_dim\":2,\"rms_norm_eps\":1e-5,"
                + "\"max_position_embeddings\":8,\"rope_theta\":10000.0,\"num_local_experts\":" + E
                + ",\"num_experts_per_tok\":2,\"router_aux_loss_coef\":0.02,\"router_jitter_noise\":0.0,"
                + "\"output_router_logits\":false,\"dtype\":\"float32\"}", "test config");
    }

    /** Every expert weight N(0, 1/in) and gate N(0, 1), from one seed. */
    private static SurgeryFixtures.MapSource randomExperts(ModelConfig c, long seed) {
        Random rnd = new Random(seed);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        Map<String, INDArray> t = new LinkedHashMap<>();
        for (int e = 0; e < E; e++) {
            for (Projection p : Projection.values()) {
                int in = p == Projection.DOWN ? I : D;
                int out = p == Projection.DOWN ? D : I;
                t.put(layout.expert(0, e, p), GradientCheck.gaussian(rnd, DataType.FLOAT, 1 / Math.sqrt(in), out, in));
            }
        }
        t.put(layout.routerGate(0), GradientCheck.gaussian(rnd, DataType.FLOAT, 1.0, E, D));
        return new SurgeryFixtures.MapSource(t);
    }
}
