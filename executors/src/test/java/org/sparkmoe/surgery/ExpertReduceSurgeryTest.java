package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.model.ModelSchema;

import java.util.List;

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

    /**
     * By weights on projections of 24 MiB of float32 (D 1024, I 6144, 3 experts to 2): parts of at most 64 MiB of new
     * projections, two each, so three parts, the router in the last. The k-means runs once for the layer
     * ({@code shared}) and every part merges with its clusters: each new projection is its members' mean (no
     * statistics: uniform), as in one part holding them all.
     */
    @Test
    void weightClustersAreMadeOnceAndSharedByPartsOfBoundedBytes() {
        ModelConfig c = ModelConfig.parse(SurgeryFixtures.mixtral(3, 2).jsonCopy().put("hidden_size", 1024)
                .put("intermediate_size", 6144).put("num_hidden_layers", 1).toString(), "24 MiB projections");
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        java.util.Map<String, INDArray> t = new java.util.LinkedHashMap<>();
        Nd4j.getRandom().setSeed(11);
        for (int e = 0; e < 3; e++) {
            for (Projection p : Projection.values()) {
                long[] shape = p == Projection.DOWN ? new long[] {1024, 6144} : new long[] {6144, 1024};
                t.put(layout.expert(0, e, p), Nd4j.randn(DataType.FLOAT, shape).addi(e == 2 ? 5 : 0));
            }
        }
        t.put(layout.routerGate(0), Nd4j.randn(DataType.FLOAT, 3, 1024));
        TensorSource source = new SurgeryFixtures.MapSource(t);
        ExpertReduceSurgery surgery = new ExpertReduceSurgery(c, 1, 2, ExpertReduceSurgery.By.WEIGHTS, null, 7);
        assertEquals(3, surgery.parts());
        assertTrue(surgery.sharesWork());
        int[][] clusters = surgery.shared(source, 0, 0);
        assertArrayEquals(new int[][] {{0, 1}, {2}}, clusters, "expert 2 is shifted by 5");
        LayerSurgery prepared = surgery.withShared(new java.io.Serializable[] {clusters});
        String[][] names = {
            {layout.expert(0, 0, Projection.GATE), layout.expert(0, 0, Projection.UP)},
            {layout.expert(0, 0, Projection.DOWN), layout.expert(0, 1, Projection.GATE)},
            {layout.expert(0, 1, Projection.UP), layout.expert(0, 1, Projection.DOWN), layout.routerGate(0)}};
        java.util.Map<String, INDArray> merged = new java.util.HashMap<>();
        for (int part = 0; part < 3; part++) {
            LayerResult r = prepared.applyPart(source, 0, 0, part);
            assertArrayEquals(clusters, r.groups());
            assertArrayEquals(names[part], r.tensors().keySet().toArray(new String[0]), "part " + part);
            merged.putAll(r.tensors());
        }
        for (Projection p : Projection.values()) {
            INDArray mean = t.get(layout.expert(0, 0, p)).add(t.get(layout.expert(0, 1, p))).divi(2);
            assertTrue(merged.get(layout.expert(0, 0, p)).sub(mean).amaxNumber().doubleValue() < 1e-5, "0 " + p);
            assertTrue(merged.get(layout.expert(0, 1, p)).equals(t.get(layout.expert(0, 2, p))), "1 " + p);
        }
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

    /** GLM-4.5: 8 experts in n_group 2 groups (topk_group 1, top-2), D 3, I 2, both layers MoE. */
    private static ModelConfig glm() {
        return ModelConfig.parse("{\"model_type\":\"glm4_moe\",\"vocab_size\":5,\"hidden_size\":" + SurgeryFixtures.D
                + ",\"intermediate_size\":8,\"moe_intermediate_size\":" + SurgeryFixtures.I + ",\"num_hidden_layers\":2,"
                + "\"num_attention_heads\":1,\"num_key_value_heads\":1,\"head_dim\":4,\"rms_norm_eps\":1e-5,"
                + "\"max_position_embeddings\":8,\"rope_theta\":10000.0,\"n_routed_experts\":8,\"n_shared_experts\":1,"
                + "\"num_experts_per_tok\":2,\"n_group\":2,\"topk_group\":1,\"first_k_dense_replace\":0}", "glm config");
    }

    @Test
    void glmClustersStayInsideTheirGroupsAndMergeTheCorrectionBias() {
        ModelConfig c = glm();
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        SurgeryFixtures.MapSource source = (SurgeryFixtures.MapSource) SurgeryFixtures.experts(c);
        source.tensors().put(layout.scoreCorrectionBias(0),
                Nd4j.create(new float[] {0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f}, new long[] {8}));
        ExpertReduceSurgery surgery = new ExpertReduceSurgery(c, 2, 4, ExpertReduceSurgery.By.WEIGHTS, null, 3);
        LayerResult r = surgery.apply(source, 0, 0);
        int[][] groups = r.groups();
        assertEquals(4, groups.length);
        for (int g = 0; g < 4; g++) {
            for (int e : groups[g]) {
                assertEquals(g / 2, e / 4, "cluster " + g + " holds expert " + e + " of another group");
            }
        }
        INDArray bias = r.tensors().get(layout.scoreCorrectionBias(0));                       // [4]
        assertArrayEquals(new long[] {4}, bias.shape());
        for (int g = 0; g < 4; g++) {
            double mean = java.util.Arrays.stream(groups[g]).average().orElseThrow();      // bias e = e, uniform weights
            assertEquals(mean, bias.getDouble(g), 1e-6, "cluster " + g);
        }
        assertEquals(4, surgery.config(c).get("n_routed_experts").asInt());
        for (int bad : new int[] {3, 2}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new ExpertReduceSurgery(c, 2, bad, ExpertReduceSurgery.By.WEIGHTS, null, 3));
            assertTrue(e.getMessage().startsWith("--experts " + bad + " does not keep the expert groups: it must be a "
                    + "multiple of n_group 2 with at least 2 experts per group"), e.getMessage());
        }
    }

    /**
     * DeepSeek-V3 (noaux_tc) in n_group 2 groups, topk_group 1: as GLM, clusters stay in their group and the
     * correction bias of every cluster is its members' weighted mean; config.json gets n_routed_experts 4 and keeps
     * n_group 2, and parses.
     */
    @Test
    void deepseekV3ClustersStayInsideTheirGroupsAndMergeTheCorrectionBias() {
        ModelConfig c = SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v3\",\"n_group\":2,\"topk_group\":1");
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        SurgeryFixtures.MapSource source = (SurgeryFixtures.MapSource) SurgeryFixtures.experts(c);
        source.tensors().put(layout.scoreCorrectionBias(1),
                Nd4j.create(new float[] {0f, 1f, 2f, 3f, 4f, 5f, 6f, 7f}, new long[] {8}));
        ExpertReduceSurgery surgery = new ExpertReduceSurgery(c, 2, 4, ExpertReduceSurgery.By.WEIGHTS, null, 5);
        LayerResult r = surgery.apply(source, 1, 1);
        int[][] groups = r.groups();
        INDArray bias = r.tensors().get(layout.scoreCorrectionBias(1));                      // [4]
        assertArrayEquals(new long[] {4}, bias.shape());
        for (int g = 0; g < 4; g++) {
            for (int e : groups[g]) {
                assertEquals(g / 2, e / 4, "cluster " + g + " holds expert " + e + " of another group");
            }
            double mean = java.util.Arrays.stream(groups[g]).average().orElseThrow();     // bias e = e, uniform weights
            assertEquals(mean, bias.getDouble(g), 1e-6, "cluster " + g);
        }
        ModelConfig reduced = ModelConfig.parse(surgery.config(c).toString(), "reduced");
        assertEquals(4, reduced.num_experts);
        assertEquals(2, reduced.routing.n_group());
        assertEquals(1, reduced.routing.topk_group());
        assertTrue(ModelSchema.expected(reduced).containsKey(layout.scoreCorrectionBias(0)));
        // DeepseekV3Config's default groups (8 of which 4 kept) cannot hold 8 experts: 1 per group; n_group 4 of 2
        // experts each leaves 1 per group at E' 4, below the two its top-2 sums rank by
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new ExpertReduceSurgery(
                SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v3\",\"n_group\":4,\"topk_group\":2"), 2, 4,
                ExpertReduceSurgery.By.WEIGHTS, null, 5));
        assertEquals("--experts 4 does not keep the expert groups: it must be a multiple of n_group 4 with at least 2 "
                + "experts per group, and topk_group 2 groups must hold num_experts_per_tok 2", e.getMessage());
    }

    /**
     * DeepSeek-V2's group_limited_greedy ranks groups by their best score, so one expert per group is enough: 8 experts
     * in 4 groups to 4 merges each group's two experts into one, and n_group 4 stays.
     */
    @Test
    void deepseekV2GroupLimitedGreedyKeepsOneExpertPerGroup() {
        ModelConfig c = SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v2\",\"topk_method\":\"group_limited_greedy\","
                + "\"n_group\":4,\"topk_group\":2");
        ExpertReduceSurgery surgery = new ExpertReduceSurgery(c, 2, 4, ExpertReduceSurgery.By.WEIGHTS, null, 5);
        LayerResult r = surgery.apply(SurgeryFixtures.experts(c), 0, 0);
        assertArrayEquals(new int[][] {{0, 1}, {2, 3}, {4, 5}, {6, 7}}, r.groups());
        ModelConfig reduced = ModelConfig.parse(surgery.config(c).toString(), "reduced");
        assertEquals(4, reduced.num_experts);
        assertEquals(4, reduced.routing.n_group());
        assertEquals(2, reduced.routing.topk_group());
        assertTrue(!ModelSchema.expected(reduced).containsKey(new CheckpointLayout(c.modelType).scoreCorrectionBias(0)),
                "softmax routers carry no correction bias");
    }

    /**
     * Groups that choose nothing — greedy ignores n_group, and keeping every group (topk_group = n_group) is plain
     * top-K — are written as n_group = topk_group = 1, so E' need not be a multiple of the old n_group; noaux_tc still
     * ranks its one group by two scores, so E' 1 is refused there.
     */
    @Test
    void deepseekGroupsThatChooseNothingBecomeOneGroup() {
        for (String routing : List.of("\"model_type\":\"deepseek_v2\",\"topk_method\":\"greedy\",\"n_group\":4,"
                + "\"topk_group\":2", "\"model_type\":\"deepseek_v3\",\"n_group\":4,\"topk_group\":4")) {
            ModelConfig c = SurgeryFixtures.deepseek(routing);
            ExpertReduceSurgery surgery = new ExpertReduceSurgery(c, 2, 3, ExpertReduceSurgery.By.WEIGHTS, null, 5);
            ModelConfig reduced = ModelConfig.parse(surgery.config(c).toString(), "reduced");
            assertEquals(3, reduced.num_experts, routing);
            assertEquals(1, reduced.routing.n_group(), routing);
            assertEquals(1, reduced.routing.topk_group(), routing);
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new ExpertReduceSurgery(
                SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v3\",\"n_group\":4,\"topk_group\":4"), 2, 1,
                ExpertReduceSurgery.By.WEIGHTS, null, 5));
        assertEquals("--experts 1: topk_method noaux_tc ranks expert groups by their two best scores, so at least 2 "
                + "experts must remain", e.getMessage());
    }
}
