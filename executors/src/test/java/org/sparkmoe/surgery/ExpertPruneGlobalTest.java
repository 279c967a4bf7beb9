package org.sparkmoe.surgery;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.Routes;
import org.sparkmoe.routing.RoutingRule;

/**
 * {@code surgery prune --global}: the ranking by per-layer score shares with a per-layer floor (hand-made scores:
 * the floor binding, ties in a fixed order, F = E'), and the masked checkpoint a gpt-oss and a DeepSeek-V3 router make
 * of it: a masked expert is never selected, and the chosen experts' weights are those of the router without them.
 */
class ExpertPruneGlobalTest {
    private static final int E = 8;

    @Test
    void sharesAreEachLayersScoresOverTheirSum() {
        double[][] s = GlobalSelection.shares(new double[][] {{1, 3, 0, 4}, {0, 0, 0, 0}});
        assertArrayEquals(new double[] {0.125, 0.375, 0, 0.5}, s[0], 0.0);
        assertArrayEquals(new double[] {0, 0, 0, 0}, s[1], 0.0);
    }

    /**
     * Budget 3·2 = 6. F = 1: each layer first takes its best (layer 0: expert 0, layer 1: expert 0, layer 2: expert 0,
     * the lowest of four equal ones); the other three places go to the highest remaining shares, 0.3 (layer 0 expert 1)
     * and 0.25 twice (layer 2's experts 1 and 2, its next in index order). F = 2 binds layer 1, whose second expert
     * (0.01) then takes a place layer 2's third expert (0.25) had.
     */
    @Test
    void theFloorBindsAndTheRestGoesToTheHighestShares() {
        double[][] shares = {{0.4, 0.3, 0.2, 0.1}, {0.97, 0.01, 0.01, 0.01}, {0.25, 0.25, 0.25, 0.25}};
        int[][] f1 = GlobalSelection.select(shares, 2, 1);
        assertArrayEquals(new int[] {0, 1}, f1[0]);
        assertArrayEquals(new int[] {0}, f1[1]);
        assertArrayEquals(new int[] {0, 1, 2}, f1[2]);
        int[][] f2 = GlobalSelection.select(shares, 2, 2);
        assertArrayEquals(new int[] {0, 1}, f2[0]);
        assertArrayEquals(new int[] {0, 1}, f2[1]);
        assertArrayEquals(new int[] {0, 1}, f2[2]);
    }

    /** Equal shares everywhere: places beyond the floor go to the lower layer first, then the lower expert. */
    @Test
    void tiesGoToTheLowerLayerThenTheLowerExpert() {
        double[][] shares = {{0.25, 0.25, 0.25, 0.25}, {0.25, 0.25, 0.25, 0.25}, {0.25, 0.25, 0.25, 0.25}};
        int[][] kept = GlobalSelection.select(shares, 2, 1);     // 6 places: 3 by the floor, 3 more
        assertArrayEquals(new int[] {0, 1, 2, 3}, kept[0]);
        assertArrayEquals(new int[] {0}, kept[1]);
        assertArrayEquals(new int[] {0}, kept[2]);
    }

    /** F = E' leaves nothing to share: every layer keeps its E' best, as the per-layer prune. */
    @Test
    void aFloorOfEPrimeIsThePerLayerPrune() {
        Random rnd = new Random(3);
        double[][] shares = new double[4][E];
        for (double[] layer : shares) {
            for (int e = 0; e < E; e++) {
                layer[e] = rnd.nextInt(5);   // ties inside a layer too
            }
        }
        int[][] kept = GlobalSelection.select(shares, 3, 3);
        for (int l = 0; l < 4; l++) {
            assertArrayEquals(ExpertPruneSurgery.keep(shares[l], E, 3), kept[l], "layer " + l);
        }
    }

    /** The fewest kept experts the chosen groups can hold: full groups first (smallest first), then fewer. */
    @Test
    void reachTakesTheRankedTiersSmallestFirst() {
        assertEquals(2, ExpertCount.reach(new int[] {2, 0, 0, 0}, 2, 2));
        assertEquals(2, ExpertCount.reach(new int[] {1, 1, 0, 0}, 2, 2));
        assertEquals(4, ExpertCount.reach(new int[] {3, 1, 1, 0}, 2, 2));
        assertEquals(7, ExpertCount.reach(new int[] {2, 5, 1}, 2, 2));
        assertEquals(1, ExpertCount.reach(new int[] {1, 1}, 1, 2));
    }

    /**
     * gpt-oss, 2 MoE layers of 8 experts, top-2, E' = 4, F = 2: layer 0's scores are concentrated on experts 0 and 1,
     * layer 1's even, so layer 0 keeps 2 and layer 1 keeps 6 = E_max; layer 0 holds its best 6 with 4 masked (zero gate
     * row, router bias MASKED). Routing random tokens through the new router never chooses a masked expert and gives
     * every token the experts and weights of the original router over the kept experts alone.
     */
    @Test
    void gptOssMaskedExpertsAreNeverChosenAndTheWeightsAreTheKeptRoutersOwn() {
        ModelConfig c = gptOss();
        double[][] s = {{50, 40, 3, 2, 1.5, 1.4, 1.3, 1.2}, {1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7}};
        ExpertPruneSurgery surgery = ExpertPruneSurgery.global(c, 4, 2, scores(c, s), ExpertScores.Method.REAP);
        ModelConfig pruned = ModelConfig.parse(surgery.config(c).toString(), "pruned");
        assertEquals(6, pruned.num_experts);
        assertArrayEquals(new int[] {0, 1}, surgery.expertLists(0).get("kept"));
        assertArrayEquals(new int[] {2, 3, 4, 5}, surgery.expertLists(0).get("masked"));
        assertArrayEquals(new int[] {2, 3, 4, 5, 6, 7}, surgery.expertLists(1).get("kept"));
        assertArrayEquals(new int[0], surgery.expertLists(1).get("masked"));

        Random rnd = new Random(11);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        Map<String, INDArray> t = new LinkedHashMap<>();
        INDArray gate = gaussian(rnd, DataType.FLOAT, 1.0, E, SurgeryFixtures.D);
        INDArray bias = gaussian(rnd, DataType.FLOAT, 0.5, E);
        t.put(layout.routerGate(0), gate);
        t.put(layout.routerBias(0), bias);
        LayerResult r = surgery.applyPart(new SurgeryFixtures.MapSource(t), 0, 0, 0);
        INDArray newGate = r.tensors().get(layout.routerGate(0));                    // [6, D]
        INDArray newBias = r.tensors().get(layout.routerBias(0));                    // [6]
        for (int g = 2; g < 6; g++) {
            assertEquals(0.0, newGate.getRow(g).norm1Number().doubleValue(), 0.0, "masked gate row " + g);
            assertEquals(ExpertPruneSurgery.MASKED, newBias.getFloat(g), 0f);
        }

        INDArray x = gaussian(rnd, DataType.FLOAT, 3.0, 200, SurgeryFixtures.D);     // [T, D]
        RoutingRule rule = RoutingRule.of(pruned);
        Router masked = new Router(newGate, newBias, null);
        Routes routes = masked.route(masked.logits(x), rule);
        int[] keep = {0, 1};
        Router dropped = new Router(Nd4j.pullRows(gate, 1, keep),                                  // kept experts only
                Nd4j.createFromArray(bias.getFloat(0), bias.getFloat(1)), null);
        Routes reference = dropped.route(dropped.logits(x), rule);
        for (int tok = 0; tok < 200; tok++) {
            for (int k = 0; k < 2; k++) {
                assertTrue(routes.expert(tok, k) < 2, "token " + tok + " chose masked expert " + routes.expert(tok, k));
                assertEquals(reference.expert(tok, k), routes.expert(tok, k));
                assertEquals(reference.weight(tok, k), routes.weight(tok, k), 0.0, "token " + tok);
            }
        }
    }

    /**
     * DeepSeek-V3, 8 experts in 4 groups of 2, 2 groups chosen, top-2, E' = 4, F = 2: layer 0 keeps experts 0 and 2
     * (one in each of groups 0 and 1), layer 1 keeps 6. Every layer holds all 8 (noaux_tc ranks a group by its two best
     * scores, so a group holds at least 2); layer 0's other 6 are masked (correction bias MASKED). Over random tokens:
     * no masked expert is chosen; groups 2 and 3, all masked, never win the group choice; and each weight is the
     * chosen experts' sigmoid scores renormalised and scaled, as the router computes for any choice.
     */
    @Test
    void deepseekMaskedGroupsLoseTheGroupChoice() {
        ModelConfig c = SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v3\",\"n_group\":4,\"topk_group\":2,"
                + "\"routed_scaling_factor\":2.5,\"norm_topk_prob\":true");
        double[][] s = {{40, 1, 30, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1}};
        ExpertPruneSurgery surgery = ExpertPruneSurgery.global(c, 4, 2, scores(c, s), ExpertScores.Method.REAP);
        ModelConfig pruned = ModelConfig.parse(surgery.config(c).toString(), "pruned");
        assertEquals(8, pruned.num_experts);
        assertArrayEquals(new int[] {0, 2}, surgery.expertLists(0).get("kept"));
        assertArrayEquals(new int[] {1, 3, 4, 5, 6, 7}, surgery.expertLists(0).get("masked"));
        assertArrayEquals(new int[] {0, 1, 2, 3, 4, 5}, surgery.expertLists(1).get("kept"));

        Random rnd = new Random(5);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        Map<String, INDArray> t = new LinkedHashMap<>();
        t.put(layout.routerGate(0), gaussian(rnd, DataType.FLOAT, 1.0, E, SurgeryFixtures.D));
        t.put(layout.scoreCorrectionBias(0), gaussian(rnd, DataType.FLOAT, 0.5, E));
        LayerResult r = surgery.applyPart(new SurgeryFixtures.MapSource(t), 0, 0, 0);
        INDArray gate = r.tensors().get(layout.routerGate(0));                        // [8, D]
        INDArray correction = r.tensors().get(layout.scoreCorrectionBias(0));         // [8]
        for (int e : new int[] {1, 3, 4, 5, 6, 7}) {
            assertEquals(ExpertPruneSurgery.MASKED, correction.getFloat(e), 0f);
        }
        assertEquals(t.get(layout.scoreCorrectionBias(0)).getFloat(2), correction.getFloat(2), 0f);

        INDArray x = gaussian(rnd, DataType.FLOAT, 3.0, 200, SurgeryFixtures.D);
        RoutingRule rule = RoutingRule.of(pruned);
        Router router = new Router(gate, null, Arrays.stream(correction.toDoubleVector()).toArray());
        INDArray logits = router.logits(x);
        Routes routes = router.route(logits, rule);
        Router.Ranking[] ranks = router.rank(logits, rule);
        for (int tok = 0; tok < 200; tok++) {
            double sum = 0;
            for (int k = 0; k < 2; k++) {
                int e = routes.expert(tok, k);
                assertTrue(e == 0 || e == 2, "token " + tok + " chose masked expert " + e);
                sum += ranks[tok].scores()[e];
            }
            for (int k = 0; k < 2; k++) {
                assertEquals(2.5 * ranks[tok].scores()[routes.expert(tok, k)] / sum, routes.weight(tok, k), 1e-6);
            }
            int[] groups = ranks[tok].keptGroups().clone();
            Arrays.sort(groups);
            assertArrayEquals(new int[] {0, 1}, groups, "token " + tok);
        }
    }

    @Test
    void refusesFamiliesWithoutASelectionBiasAndBadFloorsInOneLine() {
        ModelConfig mixtral = SurgeryFixtures.mixtral(E, 2);
        double[][] s = {{8, 7, 6, 5, 4, 3, 2, 1}, {8, 7, 6, 5, 4, 3, 2, 1}};
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ExpertPruneSurgery.global(mixtral, 4, 2, scores(mixtral, s), ExpertScores.Method.REAP));
        assertTrue(e.getMessage().startsWith("--global needs a per-expert selection bias in the checkpoint to mask "
                + "experts (gpt_oss's router bias, or e_score_correction_bias of glm4_moe, deepseek_v3, kimi_k2): a "
                + "mixtral config.json holds one expert count for every layer and its router has none"), e.getMessage());
        ModelConfig c = gptOss();
        e = assertThrows(IllegalArgumentException.class,
                () -> ExpertPruneSurgery.global(c, 4, 1, scores(c, s), ExpertScores.Method.REAP));
        assertEquals("--min-experts-per-layer must be in [2, 4] (at least num_experts_per_tok 2: a layer needs 2 "
                + "selectable experts; at most --experts 4, or F·L exceeds the budget of L·E' experts), got 1",
                e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> ExpertPruneSurgery.global(c, 4, 5, scores(c, s), ExpertScores.Method.REAP));
        assertTrue(e.getMessage().endsWith("got 5"), e.getMessage());
    }

    /**
     * GLM-like groups (2 of 4, 1 chosen, top-2): layer 0's two best experts sit in different groups, so the one group
     * its router chooses holds only one of them — refused, naming the layer and its counts.
     */
    @Test
    void refusesKeptExpertsTheChosenGroupsCannotHold() {
        ModelConfig c = SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v3\",\"n_group\":2,\"topk_group\":1");
        double[][] s = {{10, 1, 1, 1, 9, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1}};
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ExpertPruneSurgery.global(c, 2, 2, scores(c, s), ExpertScores.Method.REAP));
        assertEquals("--global: MoE layer 0 keeps [1, 1] experts in its 2 groups, so the topk_group 1 groups its "
                + "router chooses may hold only 1 of num_experts_per_tok 2; prune per layer (without --global) or "
                + "raise --min-experts-per-layer", e.getMessage());
    }

    /**
     * GLM-like groups (2 of 4, 1 chosen, top-2), F = 3: layer 0 selects experts 0, 1 (group 0) and 4 (alone in group
     * 1). Group 0 always wins the one group choice (its two best scores against one and a masked one), so expert 4
     * can never be chosen and is masked too: layer 0 keeps 2. Layer 1 selects 3..7 (1 + 4): expert 3 likewise.
     */
    @Test
    void anExpertAloneInAGroupThatNeverWinsIsMaskedToo() {
        ModelConfig c = SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v3\",\"n_group\":2,\"topk_group\":1");
        double[][] s = {{100, 90, 1, 1, 80, 1, 1, 1}, {1, 2, 3, 4, 5, 6, 7, 8}};
        ExpertPruneSurgery surgery = ExpertPruneSurgery.global(c, 4, 3, scores(c, s), ExpertScores.Method.REAP);
        assertEquals(8, ModelConfig.parse(surgery.config(c).toString(), "pruned").num_experts);
        assertArrayEquals(new int[] {0, 1}, surgery.expertLists(0).get("kept"));
        assertArrayEquals(new int[] {2, 3, 4, 5, 6, 7}, surgery.expertLists(0).get("masked"));
        assertArrayEquals(new int[] {4, 5, 6, 7}, surgery.expertLists(1).get("kept"));
        assertArrayEquals(new int[] {0, 1, 2, 3}, surgery.expertLists(1).get("masked"));
    }

    /** gpt-oss, 2 layers (both MoE), D 3, 8 experts, top-2. */
    private static ModelConfig gptOss() {
        return ModelConfig.parse("{\"model_type\": \"gpt_oss\", \"vocab_size\": 16, \"hidden_size\": "
                + SurgeryFixtures.D + ", \"intermediate_size\": 4, \"num_hidden_layers\": 2, "
                + "\"num_attention_heads\": 2, \"head_dim\": 4, \"num_local_experts\": " + E
                + ", \"num_experts_per_tok\": 2, \"rms_norm_eps\": 1e-5, \"max_position_embeddings\": 32, "
                + "\"sliding_window\": 4, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}",
                "test");
    }

    /** expert-scores.json with the same scores for every method, routed tokens 0 (unused here), one per MoE layer. */
    private static ExpertScores scores(ModelConfig c, double[][] s) {
        StringBuilder json = new StringBuilder("{\"model_type\":\"" + c.modelType.name().toLowerCase()
                + "\",\"layers\":[");
        for (int l = 0; l < s.length; l++) {
            String v = Arrays.toString(s[l]);
            json.append(l > 0 ? "," : "").append("{\"layer\":").append(l).append(",\"experts\":").append(E)
                    .append(",\"routed_tokens\":").append(Arrays.toString(new long[E])).append(",\"frequency\":")
                    .append(v).append(",\"reap\":").append(v).append(",\"ean\":").append(v).append('}');
        }
        return ExpertScores.parse(json.append("]}").toString(), "scores", c, new int[] {0, 1});
    }
}
