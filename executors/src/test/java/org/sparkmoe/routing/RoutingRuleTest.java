package org.sparkmoe.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The routing rules the next families need, on hand-made logits with expectations worked out here: sigmoid scores,
 * a selection-only score-correction bias (DeepSeek-V3's {@code e_score_correction_bias}), group-limited selection
 * ranked by the max or the sum of the top two scores of a group, the routed scaling factor; and the backward pass
 * of every rule against float64 central differences (the selection held constant).
 */
class RoutingRuleTest {
    private static final double EPS = 1e-12;

    private static Routes route(RoutingRule rule, double[] correction, double[][] logits) {
        int e = logits[0].length;
        Router router = new Router(Nd4j.zeros(DataType.DOUBLE, e, 2), null, correction);
        return router.route(Nd4j.createFromArray(logits), rule);
    }

    private static double sigmoid(double z) {
        return 1 / (1 + Math.exp(-z));
    }

    @Test
    void sigmoidScoresWeighTheSelectedExperts() {
        double[] z = {0.3, -1.0, 2.0, 0.9};
        RoutingRule rule = new RoutingRule(2, ScoreFunction.SIGMOID, false, 1, 1, RoutingRule.GroupRank.MAX, 1.0);
        Routes r = route(rule, null, new double[][] {z});
        assertArrayEquals(new int[] {2, 3}, r.experts());
        assertEquals(sigmoid(2.0), r.weight(0, 0), EPS);
        assertEquals(sigmoid(0.9), r.weight(0, 1), EPS);
    }

    @Test
    void correctionBiasChangesTheSelectionButNotTheWeights() {
        double[] z = {0.3, -1.0, 2.0, 0.9};
        double[] bias = {0.0, 5.0, 0.0, 0.0};                     // expert 1 is chosen first despite its score
        RoutingRule rule = new RoutingRule(2, ScoreFunction.SIGMOID, true, 1, 1, RoutingRule.GroupRank.MAX, 2.5);
        Routes r = route(rule, bias, new double[][] {z});
        assertArrayEquals(new int[] {1, 2}, r.experts());
        double sum = sigmoid(-1.0) + sigmoid(2.0);
        assertEquals(2.5 * sigmoid(-1.0) / sum, r.weight(0, 0), EPS, "uncorrected score, renormalised, scaled");
        assertEquals(2.5 * sigmoid(2.0) / sum, r.weight(0, 1), EPS);
    }

    @Test
    void groupLimitedSelectionKeepsTheBestGroups() {
        // 3 groups of 2: scores (softmax-free sigmoid) group 0 {0.9, 0.8}, group 1 {3.0, -5}, group 2 {1.0, 0.95}
        double[] z = {0.9, 0.8, 3.0, -5.0, 1.0, 0.95};
        // by the max: groups 1 (3.0) and 2 (1.0); top-2 among {2, 3, 4, 5} = 2, 4
        RoutingRule byMax = new RoutingRule(2, ScoreFunction.SIGMOID, true, 3, 2, RoutingRule.GroupRank.MAX, 1.0);
        assertArrayEquals(new int[] {2, 4}, route(byMax, null, new double[][] {z}).experts());
        // by the sum of the top two: group 1 sums σ(3) + σ(−5) ≈ 0.959, groups 0 and 2 about 1.40 and 1.45
        RoutingRule byTop2 = new RoutingRule(2, ScoreFunction.SIGMOID, true, 3, 2, RoutingRule.GroupRank.TOP2_SUM, 1.0);
        assertArrayEquals(new int[] {4, 5}, route(byTop2, null, new double[][] {z}).experts());
        RoutingRule oneGroup = new RoutingRule(3, ScoreFunction.SIGMOID, true, 3, 1, RoutingRule.GroupRank.TOP2_SUM, 1.0);
        assertThrows(IllegalArgumentException.class, () -> route(oneGroup, null, new double[][] {z}),
                "3 experts cannot come from one group of 2");
    }

    @Test
    void badRulesAreNamed() {
        String groups = assertThrows(IllegalArgumentException.class,
                () -> new RoutingRule(2, ScoreFunction.SOFTMAX, true, 2, 3, RoutingRule.GroupRank.MAX, 1.0)).getMessage();
        assertEquals("expert groups must satisfy 1 ≤ topk_group ≤ n_group, got n_group 2, topk_group 3", groups);
        String divide = assertThrows(IllegalArgumentException.class, () -> route(
                new RoutingRule(1, ScoreFunction.SOFTMAX, true, 4, 2, RoutingRule.GroupRank.MAX, 1.0), null,
                new double[][] {{1, 2, 3, 4, 5, 6}})).getMessage();
        assertEquals("n_group 4 must divide the 6 experts", divide);
        String scale = assertThrows(IllegalArgumentException.class,
                () -> new RoutingRule(2, ScoreFunction.SOFTMAX, true, 1, 1, RoutingRule.GroupRank.MAX, 0)).getMessage();
        assertTrue(scale.contains("routed scaling factor"), scale);
    }

    /** dL/dlogits of L = Σ_p c_p · g_p against central differences, for every score function and option. */
    @Test
    void backwardMatchesCentralDifferences() {
        RoutingRule[] rules = {
                RoutingRule.softmaxTopK(2, true),
                RoutingRule.softmaxTopK(3, false),
                new RoutingRule(2, ScoreFunction.SOFTMAX, true, 1, 1, RoutingRule.GroupRank.MAX, 1.7),
                new RoutingRule(2, ScoreFunction.SIGMOID, false, 1, 1, RoutingRule.GroupRank.MAX, 1.0),
                new RoutingRule(2, ScoreFunction.SIGMOID, true, 3, 2, RoutingRule.GroupRank.TOP2_SUM, 2.5),
        };
        Random rnd = new Random(3);
        int tokens = 4;
        int experts = 6;
        double[] bias = {0.1, -0.2, 0.0, 0.3, -0.1, 0.05};
        for (RoutingRule rule : rules) {
            double[][] z = new double[tokens][experts];
            for (double[] row : z) {
                for (int e = 0; e < experts; e++) {
                    row[e] = rnd.nextGaussian();
                }
            }
            double[] c = new double[tokens * rule.topK()];
            for (int p = 0; p < c.length; p++) {
                c[p] = rnd.nextGaussian();
            }
            Routes r = route(rule, bias, z);
            double[] dz = new double[tokens * experts];
            r.backward(c, dz);
            double h = 1e-6;
            for (int t = 0; t < tokens; t++) {
                for (int e = 0; e < experts; e++) {
                    double original = z[t][e];
                    z[t][e] = original + h;
                    double plus = loss(route(rule, bias, z), r.experts(), c);
                    z[t][e] = original - h;
                    double minus = loss(route(rule, bias, z), r.experts(), c);
                    z[t][e] = original;
                    double numeric = (plus - minus) / (2 * h);
                    assertEquals(numeric, dz[t * experts + e], 1e-8 + 1e-6 * Math.abs(numeric),
                            rule + " dlogits[" + t + ", " + e + "]");
                }
            }
        }
    }

    private static double loss(Routes r, int[] selection, double[] c) {
        assertArrayEquals(selection, r.experts(), "a finite-difference step changed the selection");
        double l = 0;
        for (int p = 0; p < c.length; p++) {
            l += c[p] * r.weightOfPair(p);
        }
        return l;
    }
}
