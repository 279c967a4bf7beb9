package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TopKSurgeryTest {
    private static final double[] ZERO_LOGITS = {0, 0, 0, 0};

    /** 4 experts, 10 tokens; topm_sq_sum = 10·(1, 0.5, 0.4, 0.25): E[Σ_top1] = 1, E[Σ_top2] = 0.5. */
    private static RoutingStats stats(ModelConfig c) {
        double[] topm = {10, 5, 4, 2.5};
        return RoutingStats.parse(SurgeryFixtures.statsJson(4, 10, new long[][] {{5, 5, 5, 5}, {5, 5, 5, 5}},
                new double[][] {ZERO_LOGITS, ZERO_LOGITS}, new double[][] {topm, topm}, new String[0], new long[0][][], 0),
                "stats", c, 2);
    }

    @Test
    void uniformIsSqrtOfMOverK() {
        assertEquals(Math.sqrt(0.5), TopKRescale.uniform(2, 1), 0);
        assertEquals(2.0, TopKRescale.uniform(2, 8), 0);
        assertEquals(1.0, TopKRescale.uniform(3, 3), 0);
    }

    @Test
    void measuredIsTheRatioOfMeanSquaredTopWeights() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        RoutingStats.Layer layer = stats(c).layer(0);
        // K = 2 → M = 1: √(0.5 / 1); K = 2 → M = 4: √(0.5 / 0.25)
        assertEquals(Math.sqrt(0.5), TopKRescale.measured(layer, 2, 1), 1e-15);
        assertEquals(Math.sqrt(2), TopKRescale.measured(layer, 2, 4), 1e-15);
        assertEquals(1.0, TopKRescale.measured(layer, 2, 2), 0);
    }

    /** With equal weights over the top m (Σ ĝ² = 1/m per token), measured equals uniform. */
    @Test
    void measuredEqualsUniformForEqualWeights() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        double[] topm = {7, 7 / 2.0, 7 / 3.0, 7 / 4.0};
        RoutingStats s = RoutingStats.parse(SurgeryFixtures.statsJson(4, 7, new long[][] {{1, 2, 3, 4}, {1, 2, 3, 4}},
                new double[][] {ZERO_LOGITS, ZERO_LOGITS}, new double[][] {topm, topm}, new String[0], new long[0][][], 0),
                "stats", c, 2);
        for (int m = 1; m <= 4; m++) {
            assertEquals(TopKRescale.uniform(2, m), TopKRescale.measured(s.layer(1), 2, m), 1e-15);
        }
    }

    @Test
    void scalesOnlyTheDownProjectionsAndSetsTheNewTopK() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        double[] alpha = TopKSurgery.alphas(TopKRescale.Method.MEASURED, c, 2, 1, stats(c));
        TopKSurgery surgery = new TopKSurgery(c, 1, alpha);
        LayerResult r = surgery.apply(SurgeryFixtures.experts(c), 1, 1);
        assertEquals(4, r.tensors().size());
        for (int e = 0; e < 4; e++) {
            INDArray w2 = r.tensors().get(layout.expert(1, e, Projection.DOWN));
            assertEquals((100 + 10 * e + 3) * Math.sqrt(0.5), w2.getDouble(1, 1), 1e-4);
            assertFalse(r.tensors().containsKey(layout.expert(1, e, Projection.GATE)));
        }
        assertEquals(Math.sqrt(0.5), r.metrics().get("alpha"), 1e-15);
        assertEquals(1, surgery.config(c).get("num_experts_per_tok").asInt());
        assertEquals(4, surgery.config(c).get("num_local_experts").asInt());
    }

    @Test
    void aLayerIsScaledInSlicesOfExpertsAndAnAlphaOfOneWritesNothing() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        assertEquals(1, new TopKSurgery(c, 1, new double[] {0.5, 0.5}).parts(), "tiny experts: one part a layer");
        LayerResult none = new TopKSurgery(c, 1, new double[] {1, 1}).apply(SurgeryFixtures.experts(c), 1, 1);
        assertTrue(none.tensors().isEmpty(), "α = 1 leaves the down projections to be copied as stored");
        assertEquals(1.0, none.metrics().get("alpha"));

        // Mixtral-8x7B's down projections are 235 MB of float32 each: one expert a part
        ModelConfig big = ModelConfig.parse(c.jsonCopy().put("hidden_size", 4096).put("intermediate_size", 14336)
                .put("num_local_experts", 8).toString(), "mixtral-8x7b");
        TopKSurgery sliced = new TopKSurgery(big, 1, new double[] {0.5, 0.5});
        assertEquals(8, sliced.parts());
        ModelConfig mid = ModelConfig.parse(c.jsonCopy().put("hidden_size", 2048).put("intermediate_size", 1408)
                .put("num_local_experts", 60).toString(), "qwen-sized");
        assertEquals(12, new TopKSurgery(mid, 1, new double[] {0.5, 0.5}).parts(), "5 experts (57.7 MB) a part");
    }

    @Test
    void badSettingsFailNamingTheFlag() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new TopKSurgery(c, 5, new double[] {1, 1}));
        assertTrue(e.getMessage().startsWith("--top-k must be in [1, 4]"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new TopKSurgery(c, 0, new double[] {1, 1}));
        double[] zero = {10, 0, 0, 0};
        RoutingStats s = RoutingStats.parse(SurgeryFixtures.statsJson(4, 10, new long[][] {{1, 1, 1, 1}, {1, 1, 1, 1}},
                new double[][] {ZERO_LOGITS, ZERO_LOGITS}, new double[][] {zero, zero}, new String[0], new long[0][][], 0),
                "stats", c, 2);
        e = assertThrows(IllegalArgumentException.class, () -> TopKRescale.measured(s.layer(0), 2, 3));
        assertTrue(e.getMessage().contains("topm_sq_sum[2] = 0.0"), e.getMessage());
    }
}
