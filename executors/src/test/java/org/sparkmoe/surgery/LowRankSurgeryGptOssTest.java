package org.sparkmoe.surgery;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LowRankAdapters;
import org.sparkmoe.experts.LowRankFactorised;
import org.sparkmoe.experts.LowRankWeights;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.Routes;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code surgery lowrank} on a gpt-oss layer (random experts with biases, router with bias, E = 4, D = 6, I = 4) at
 * full rank R = 4: the biases are written as gpt-oss stores them (gate_up interleaved) and kept exactly, and the
 * low-rank layer, with gpt-oss's softmax over the top K (weights summing to 1), computes per token the clamped FFN of
 * Σₖ gₖ·(Wₖ, cₖ) — with K = 1 the original MoE layer itself.
 */
class LowRankSurgeryGptOssTest {
    private static final int E = 4;
    private static final int D = 6;
    private static final int I = 4;
    private static final int T = 9;

    private static ModelConfig config(int topK) {
        return ModelConfig.parse("{\"model_type\": \"gpt_oss\", \"vocab_size\": 16, \"hidden_size\": " + D
                + ", \"intermediate_size\": " + I + ", \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                + "\"head_dim\": 4, \"num_local_experts\": " + E + ", \"num_experts_per_tok\": " + topK + ", "
                + "\"rms_norm_eps\": 1e-5, \"max_position_embeddings\": 32, \"sliding_window\": 4, "
                + "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}", "test");
    }

    /** Per-expert weights N(0, 0.5²) (gate/up biases N(0, 1) so some gate values pass the clamp), router and bias. */
    private static SurgeryFixtures.MapSource layer(ModelConfig c) {
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        Random rnd = new Random(17);
        Map<String, INDArray> t = new LinkedHashMap<>();
        for (int e = 0; e < E; e++) {
            t.put(layout.expert(0, e, Projection.GATE), gaussian(rnd, 2.0, I, D));
            t.put(layout.expert(0, e, Projection.UP), gaussian(rnd, 2.0, I, D));
            t.put(layout.expert(0, e, Projection.DOWN), gaussian(rnd, 0.5, D, I));
            t.put(layout.expertBias(0, e, Projection.GATE), gaussian(rnd, 1.0, I));
            t.put(layout.expertBias(0, e, Projection.UP), gaussian(rnd, 1.0, I));
            t.put(layout.expertBias(0, e, Projection.DOWN), gaussian(rnd, 0.5, D));
        }
        t.put(layout.routerGate(0), gaussian(rnd, 1.0, E, D));
        t.put(layout.routerBias(0), gaussian(rnd, 1.0, E));
        return new SurgeryFixtures.MapSource(t);
    }

    private static INDArray gaussian(Random rnd, double sd, long... shape) {
        INDArray a = Nd4j.create(DataType.FLOAT, shape);
        for (long j = 0; j < a.length(); j++) {
            a.putScalar(j, rnd.nextGaussian() * sd);
        }
        return a;
    }

    /** The surgery's layer as eval loads it: base, LoRA experts and the biases read back from gate_up's interleaving. */
    private static LowRankWeights lowRank(LayerResult r, CheckpointLayout layout) {
        Map<String, INDArray> t = r.tensors();
        return new LowRankWeights(t.get(layout.sharedBase(0, Projection.GATE)), t.get(layout.sharedBase(0, Projection.UP)),
                t.get(layout.sharedBase(0, Projection.DOWN)), new LowRankAdapters(
                        t.get(layout.stackedLoraA(0, Projection.GATE)), t.get(layout.stackedLoraB(0, Projection.GATE)),
                        t.get(layout.stackedLoraA(0, Projection.UP)), t.get(layout.stackedLoraB(0, Projection.UP)),
                        t.get(layout.stackedLoraA(0, Projection.DOWN)), t.get(layout.stackedLoraB(0, Projection.DOWN)),
                        1.0)).withInterleavedBiases(t.get(FusedExperts.gateUpBias(0)), t.get(FusedExperts.downBias(0)));
    }

    @ParameterizedTest(name = "top-{0}")
    @CsvSource({"1", "3"})
    void fullRankKeepsTheBiasesAndComputesTheMixedClampedFfn(int topK) {
        ModelConfig c = config(topK);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        SurgeryFixtures.MapSource source = layer(c);
        LayerResult r = new LowRankSurgery(c, I, new double[][] {MergeWeights.uniform(E)}).apply(source, 0, 0);

        // the biases, exactly, where gpt-oss keeps them: gate bias k at column 2k, up bias k at 2k + 1
        INDArray gateUp = r.tensors().get(FusedExperts.gateUpBias(0));                        // [E, 2I]
        INDArray down = r.tensors().get(FusedExperts.downBias(0));                            // [E, D]
        assertArrayEquals(new long[] {E, 2 * I}, gateUp.shape());
        for (int e = 0; e < E; e++) {
            for (int k = 0; k < I; k++) {
                assertEquals(source.readFloat(layout.expertBias(0, e, Projection.GATE)).getFloat(k),
                        gateUp.getFloat(e, 2 * k), 0f);
                assertEquals(source.readFloat(layout.expertBias(0, e, Projection.UP)).getFloat(k),
                        gateUp.getFloat(e, 2 * k + 1), 0f);
            }
            assertEquals(source.readFloat(layout.expertBias(0, e, Projection.DOWN)), down.getRow(e));
        }
        ModelConfig low = ModelConfig.parse(new LowRankSurgery(c, I, new double[][] {MergeWeights.uniform(E)})
                .config(c).toString(), "new");
        assertArrayEquals(new long[] {E, 2 * I}, ModelSchema.expected(low).get(FusedExperts.gateUpBias(0)));
        assertArrayEquals(new long[] {E, D}, ModelSchema.expected(low).get(FusedExperts.downBias(0)));

        Router router = new Router(source.readFloat(layout.routerGate(0)), source.readFloat(layout.routerBias(0)), null);
        RoutingRule rule = RoutingRule.of(c);
        Nd4jGroupedGemm gemm = new Nd4jGroupedGemm();
        MoeBlock lowRank = new MoeBlock(router, RouterOptions.of(rule), new LowRankFactorised(lowRank(r, layout), gemm),
                null);
        INDArray x = gaussian(new Random(5), 3.0, T, D);                                    // [T, D]
        INDArray actual = lowRank.forward(x, topK).hidden();

        // per token: the clamped FFN of the selected experts' weights and biases mixed with the routing weights
        INDArray[] w = new INDArray[3];
        INDArray[] b = new INDArray[3];
        for (Projection p : Projection.values()) {
            w[p.ordinal()] = ExpertStack.read(source, layout, 0, E, p);                      // [E, out, in]
            b[p.ordinal()] = ExpertStack.readBiases(source, layout, 0, E, p);                // [E, 1, out]
        }
        Routes routes = router.route(router.logits(x), rule);
        INDArray expected = Nd4j.create(DataType.FLOAT, T, D);
        boolean clamped = false;
        for (int t = 0; t < T; t++) {
            INDArray[] effW = new INDArray[3];
            INDArray[] effB = new INDArray[3];
            double sum = 0;
            for (int p = 0; p < 3; p++) {
                effW[p] = Nd4j.zeros(DataType.FLOAT, w[p].size(1), w[p].size(2));
                effB[p] = Nd4j.zeros(DataType.FLOAT, 1, w[p].size(1));
                for (int k = 0; k < topK; k++) {
                    float g = (float) routes.weight(t, k);
                    effW[p].addi(w[p].slice(routes.expert(t, k)).mul(g));
                    effB[p].addi(b[p].slice(routes.expert(t, k)).mul(g));
                }
            }
            for (int k = 0; k < topK; k++) {
                sum += routes.weight(t, k);
            }
            assertEquals(1.0, sum, 1e-6, "gpt-oss's weights sum to 1");
            INDArray xt = x.getRow(t).reshape(1, D);
            INDArray h1 = xt.mmul(effW[0].transpose()).addi(effB[0]);
            clamped |= h1.maxNumber().doubleValue() > GatedActivation.LIMIT;
            INDArray act = Activations.gated(GatedActivation.CLAMPED_SWIGLU, h1,
                    xt.mmul(effW[1].transpose()).addi(effB[1]), Workers.SERIAL);
            expected.getRow(t).assign(act.mmul(effW[2].transpose()).addi(effB[2]).reshape(D));
        }
        double scale = expected.amaxNumber().doubleValue();
        assertTrue(clamped, "some gate value passes the clamp");
        assertTrue(expected.sub(actual).amaxNumber().doubleValue() <= 1e-5 * scale, expected + " vs " + actual);

        if (topK == 1) {
            // one expert per token with weight 1: the original MoE layer (full experts, biases, clamped gate)
            MoeBlock original = new MoeBlock(router, RouterOptions.of(rule), new FullExperts(new ExpertWeights(
                    WeightStack.of(w[0]), WeightStack.of(w[1]), WeightStack.of(w[2]), b[0].reshape(E, I),
                    b[1].reshape(E, I), b[2].reshape(E, D), GatedActivation.CLAMPED_SWIGLU), gemm), null);
            INDArray y = original.forward(x, 1).hidden();
            assertTrue(y.sub(actual).amaxNumber().doubleValue() <= 1e-5 * scale, y + " vs " + actual);
        }
    }
}
