package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelSchema;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ExpertReduceSurgeryTest {
    private static final double[] LOGITS = {0, 0, 0, 0};
    private static final double[] TOPM = {4, 2, 1, 1};

    /**
     * Routing profiles: in file a experts 0 and 2 are selected, in file b experts 1 and 3 (rates 1 vs 0), so
     * clustering into 2 must give {0, 2} and {1, 3}. Counts 3, 1, 1, 0 weigh the merges.
     */
    private static RoutingStats stats(ModelConfig c) {
        long[] count = {3, 1, 1, 0};
        return RoutingStats.parse(SurgeryFixtures.statsJson(4, 4, new long[][] {count, count},
                new double[][] {LOGITS, LOGITS}, new double[][] {TOPM, TOPM}, new String[] {"a", "b"},
                new long[][][] {{{2, 0, 2, 0}, {2, 0, 2, 0}}, {{0, 2, 0, 2}, {0, 2, 0, 2}}}, 2), "stats", c, 2);
    }

    @Test
    void routingClustersMergeByFrequency() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        ExpertReduceSurgery surgery = new ExpertReduceSurgery(c, 2, 2, ExpertReduceSurgery.By.ROUTING, stats(c), 42);
        LayerResult r = surgery.apply(SurgeryFixtures.experts(c), 1, 1);
        assertArrayEquals(new int[][] {{0, 2}, {1, 3}}, r.groups());
        // group 0: experts 0, 2 with counts 3 and 1 → (3·(100 + 1) + 1·(120 + 1)) / 4 for w1
        assertEquals((3 * 101 + 121) / 4.0, r.tensors().get(layout.expert(1, 0, Projection.GATE)).getDouble(1, 2), 1e-4);
        // group 1: experts 1 and 3 with counts 1 and 0 → expert 1 alone: 110 + 3 for w2
        assertEquals(113, r.tensors().get(layout.expert(1, 1, Projection.DOWN)).getDouble(2, 1), 1e-4);
        INDArray gate = r.tensors().get(layout.routerGate(1)); // [2, D], rows (3·1 + 1·3) / 4 and 2
        assertArrayEquals(new long[] {2, SurgeryFixtures.D}, gate.shape());
        assertEquals(1.5, gate.getDouble(0, 0), 1e-6);
        assertEquals(2, gate.getDouble(1, 2), 1e-6);
        ModelConfig reduced = ModelConfig.parse(surgery.config(c).toString(), "new");
        assertEquals(2, reduced.num_experts);
        assertEquals(2, reduced.num_experts_per_tok);
        assertTrue(ModelSchema.expected(reduced).containsKey(layout.expert(0, 1, Projection.UP)));
    }

    /**
     * Weights: experts 0, 2, 3 hold about 1, 21, 31 and expert 1 is moved next to expert 0 (about 2), so clustering
     * 4 into 2 by weights gives {0, 1} and {2, 3}; without statistics the merge is uniform.
     */
    @Test
    void weightClustersWithoutStatisticsMergeUniformly() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        ExpertReduceSurgery surgery = new ExpertReduceSurgery(c, 2, 2, ExpertReduceSurgery.By.WEIGHTS, null, 3);
        SurgeryFixtures.MapSource source = (SurgeryFixtures.MapSource) SurgeryFixtures.experts(c);
        for (Projection p : Projection.values()) {
            source.tensors().get(layout.expert(0, 1, p)).assign(source.tensors().get(layout.expert(0, 0, p)).add(1));
        }
        LayerResult r = surgery.apply(source, 0, 0);
        assertArrayEquals(new int[][] {{0, 1}, {2, 3}}, r.groups());
        assertEquals(1.5, r.tensors().get(layout.expert(0, 0, Projection.GATE)).getDouble(0, 0), 1e-4);
        assertEquals(26, r.tensors().get(layout.expert(0, 1, Projection.GATE)).getDouble(0, 0), 1e-4);
        assertEquals(2, surgery.config(SurgeryFixtures.mixtral(4, 3)).get("num_experts_per_tok").asInt()); // min(K, E')
        ExpertReduceSurgery toOne = new ExpertReduceSurgery(SurgeryFixtures.mixtral(4, 2), 2, 1,
                ExpertReduceSurgery.By.WEIGHTS, null, 3);
        assertEquals(1, toOne.config(c).get("num_experts_per_tok").asInt());
    }

    @Test
    void memberWeightsFallBackToUniformForNeverSelectedGroups() {
        assertArrayEquals(new double[] {0, 0.5, 0, 0.5}, ExpertReduceSurgery.memberWeights(new int[] {1, 3},
                new double[] {5, 0, 5, 0}), 0);
        assertArrayEquals(new double[] {0.25, 0, 0.75, 0}, ExpertReduceSurgery.memberWeights(new int[] {0, 2},
                new double[] {1, 0, 3, 0}), 0);
    }

    @Test
    void badSettingsFail() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new ExpertReduceSurgery(c, 2, 4, ExpertReduceSurgery.By.WEIGHTS, null, 1));
        assertEquals("--experts must be in [1, 3] (fewer than the model's 4), got 4", e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> new ExpertReduceSurgery(c, 2, 2, ExpertReduceSurgery.By.ROUTING, null, 1));
        assertTrue(e.getMessage().startsWith("--by routing needs --stats"), e.getMessage());
    }
}
