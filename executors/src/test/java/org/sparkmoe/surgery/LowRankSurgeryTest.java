package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.LowRankFactorised;
import org.sparkmoe.experts.LowRankWeights;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.Routes;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LowRankSurgeryTest {
    /**
     * Fixture experts are constant matrices (10·e + p + 1 everywhere), so W_e − mean is rank 1: rank 1 is exact, the
     * base is the mean (layer 0: 15 + p + 1) and the parameters of w2 [3, 2] are 4·6 = 24 before, 6 + 4·1·5 = 26 after.
     */
    @Test
    void rankOneIsExactForConstantExperts() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        LowRankSurgery surgery = new LowRankSurgery(c, 1, new double[][] {MergeWeights.uniform(4), MergeWeights.uniform(4)});
        TensorSource source = SurgeryFixtures.experts(c);
        LayerResult r = surgery.apply(source, 0, 0);
        assertEquals(18, r.tensors().get(layout.sharedBase(0, Projection.DOWN)).getDouble(2, 1), 1e-5);
        INDArray a = r.tensors().get(layout.stackedLoraA(0, Projection.DOWN)); // [E, R, I]
        INDArray b = r.tensors().get(layout.stackedLoraB(0, Projection.DOWN)); // [E, D, R]
        assertArrayEquals(new long[] {4, 1, SurgeryFixtures.I}, a.shape());
        assertArrayEquals(new long[] {4, SurgeryFixtures.D, 1}, b.shape());
        INDArray w3 = r.tensors().get(layout.sharedBase(0, Projection.DOWN)).add(b.slice(3).mmul(a.slice(3)));
        assertTrue(w3.sub(source.readFloat(layout.expert(0, 3, Projection.DOWN))).amaxNumber().doubleValue() < 1e-4);
        assertTrue(r.metrics().get("w2_rel_error") < 1e-6, r.metrics().toString());
        assertEquals(24, r.metrics().get("w2_params_before"));
        assertEquals(26, r.metrics().get("w2_params_after"));
        // part 2 alone is the w2 share of the whole layer
        LayerResult down = surgery.applyPart(source, 0, 0, 2);
        assertEquals(java.util.List.of(layout.sharedBase(0, Projection.DOWN), layout.stackedLoraA(0, Projection.DOWN),
                layout.stackedLoraB(0, Projection.DOWN)), new java.util.ArrayList<>(down.tensors().keySet()));
        for (String name : down.tensors().keySet()) {
            assertEquals(r.tensors().get(name), down.tensors().get(name), name);
        }
        assertEquals(9, r.tensors().size());
        ModelConfig low = ModelConfig.parse(surgery.config(c).toString(), "new");
        assertEquals(1, low.low_rank_experts_rank);
        assertTrue(ModelSchema.expected(low).containsKey(layout.stackedLoraB(1, Projection.UP)));
    }

    /** Random experts: the error is the discarded tail, so it falls with the rank and vanishes at full rank. */
    @Test
    void errorFallsWithRankAndTheWeightedBaseIsTheFrequencyMean() {
        ModelConfig c = SurgeryFixtures.mixtral(3, 2);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        SurgeryFixtures.MapSource source = (SurgeryFixtures.MapSource) SurgeryFixtures.experts(c);
        Random rnd = new Random(3);
        for (String name : source.tensors().keySet()) {
            INDArray t = source.tensors().get(name);
            for (long j = 0; j < t.length(); j++) {
                t.putScalar(j, rnd.nextGaussian());
            }
        }
        double[] w = LowRankSurgery.frequencyWeights(new long[] {1, 3, 0});
        assertArrayEquals(new double[] {0.25, 0.75, 0}, w, 0);
        LayerResult one = new LowRankSurgery(c, 1, new double[][] {w, w}).apply(source, 1, 1);
        LayerResult two = new LowRankSurgery(c, 2, new double[][] {w, w}).apply(source, 1, 1);
        INDArray base = one.tensors().get(layout.sharedBase(1, Projection.GATE));
        INDArray expected = source.readFloat(layout.expert(1, 0, Projection.GATE)).mul(0.25)
                .add(source.readFloat(layout.expert(1, 1, Projection.GATE)).mul(0.75));
        assertTrue(base.sub(expected).amaxNumber().doubleValue() < 1e-6);
        assertTrue(one.metrics().get("w1_rel_error") > 0.01, one.metrics().toString());
        assertTrue(two.metrics().get("w1_rel_error") < 1e-6, two.metrics().toString()); // rank 2 = min(I, D)
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new LowRankSurgery(c, 3, new double[][] {w, w}));
        assertEquals("--rank must be in [1, 2] (min of hidden_size 3 and intermediate_size 2), got 3", e.getMessage());
    }

    /**
     * The converted layer runs as low-rank experts: per token t, one SwiGLU FFN with
     * W_eff(t) = base + Σ_k g_k·B_k·A_k for each projection. At full rank B_k·A_k = W_k − base and Σ g = 1, so
     * W_eff(t) = Σ_k g_k·W_{e_k}: the selected experts' weights mixed per token (not their outputs, as the original
     * MoE layer does). Checked against that per-token reference built from the original experts.
     */
    @Test
    void fullRankLayerMixesTheSelectedExpertsWeightsPerToken() {
        ModelConfig c = SurgeryFixtures.mixtral(3, 2);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        SurgeryFixtures.MapSource source = (SurgeryFixtures.MapSource) SurgeryFixtures.experts(c);
        Random rnd = new Random(9);
        for (INDArray t : source.tensors().values()) {
            for (long j = 0; j < t.length(); j++) {
                t.putScalar(j, rnd.nextGaussian() * 0.5);
            }
        }
        LayerResult r = new LowRankSurgery(c, 2, new double[][] {MergeWeights.uniform(3), MergeWeights.uniform(3)})
                .apply(source, 0, 0);
        Router router = new Router(source.readFloat(layout.routerGate(0)));
        RoutingRule rule = RoutingRule.softmaxTopK(2, true);
        org.sparkmoe.kernels.Nd4jGroupedGemm gemm = new org.sparkmoe.kernels.Nd4jGroupedGemm();
        INDArray[] stacks = new INDArray[3];
        for (Projection p : Projection.values()) {
            stacks[p.ordinal()] = ExpertStack.read(source, layout, 0, 3, p);
        }
        MoeBlock low = new MoeBlock(router, RouterOptions.of(rule), new LowRankFactorised(
                new LowRankWeights(
                        r.tensors().get(layout.sharedBase(0, Projection.GATE)),
                        r.tensors().get(layout.sharedBase(0, Projection.UP)),
                        r.tensors().get(layout.sharedBase(0, Projection.DOWN)),
                        new org.sparkmoe.experts.LowRankAdapters(
                                r.tensors().get(layout.stackedLoraA(0, Projection.GATE)),
                                r.tensors().get(layout.stackedLoraB(0, Projection.GATE)),
                                r.tensors().get(layout.stackedLoraA(0, Projection.UP)),
                                r.tensors().get(layout.stackedLoraB(0, Projection.UP)),
                                r.tensors().get(layout.stackedLoraA(0, Projection.DOWN)),
                                r.tensors().get(layout.stackedLoraB(0, Projection.DOWN)), 1.0)), gemm), null);
        INDArray x = Nd4j.rand(DataType.FLOAT, 7, SurgeryFixtures.D).subi(0.5);
        Routes routing = router.route(router.logits(x), rule);
        INDArray expected = Nd4j.create(DataType.FLOAT, 7, SurgeryFixtures.D);
        for (int t = 0; t < 7; t++) {
            INDArray[] eff = new INDArray[3];
            for (int p = 0; p < 3; p++) {
                eff[p] = Nd4j.zeros(DataType.FLOAT, stacks[p].size(1), stacks[p].size(2));
                for (int k = 0; k < 2; k++) {
                    eff[p].addi(stacks[p].slice(routing.expert(t, k)).mul((float) routing.weight(t, k)));
                }
            }
            INDArray xt = x.getRow(t).reshape(1, SurgeryFixtures.D);
            INDArray h = org.sparkmoe.kernels.Activations.swiGlu(xt.mmul(eff[0].transpose()), xt.mmul(eff[1].transpose()));
            expected.getRow(t).assign(h.mmul(eff[2].transpose()).reshape(SurgeryFixtures.D));
        }
        INDArray actual = low.forward(x, 2).hidden();
        double scale = expected.amaxNumber().doubleValue();
        assertTrue(expected.sub(actual).amaxNumber().doubleValue() <= 1e-5 * scale, expected + " vs " + actual);
    }
}
