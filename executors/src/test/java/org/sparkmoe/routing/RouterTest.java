package org.sparkmoe.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Routing on hand-made logits. Expected probabilities are softmax computed in double here:
 * p_e = exp(l_e - max) / Σ exp(l_j - max).
 */
class RouterTest {

    private static final float EPS = 1e-6f;

    /** Routes of T tokens from logits [T, E] with a router of E experts (its weight is unused by route()). */
    private static Routes route(boolean normalize, INDArray logits, int topK) {
        Router router = new Router(Nd4j.zeros(DataType.FLOAT, logits.size(1), 3));     // gate [E, D]
        return router.route(logits, RoutingRule.softmaxTopK(topK, normalize));
    }

    /** [T·K] the routing weights, pair order, as float32 (what a float32 router computes). */
    private static float[] weights(Routes r) {
        float[] w = new float[r.tokens() * r.topK()];
        for (int p = 0; p < w.length; p++) {
            w[p] = (float) r.weightOfPair(p);
        }
        return w;
    }

    private static INDArray logits(float[][] rows) {
        return Nd4j.createFromArray(rows); // [T, E]
    }

    private static double[] softmax(float[] l) {
        double max = Double.NEGATIVE_INFINITY;
        for (float v : l) {
            max = Math.max(max, v);
        }
        double sum = 0;
        double[] p = new double[l.length];
        for (int i = 0; i < l.length; i++) {
            p[i] = Math.exp(l[i] - max);
            sum += p[i];
        }
        for (int i = 0; i < l.length; i++) {
            p[i] /= sum;
        }
        return p;
    }

    @Test
    void topKAndRawProbabilitiesWithoutRenormalisation() {
        float[] row = {0.5f, 2.0f, -1.0f, 1.0f};
        double[] p = softmax(row);
        Routes rr = route(false, logits(new float[][] {row}), 2);
        float[] w = weights(rr);
        assertArrayEquals(new int[] {1, 3}, rr.experts());
        assertEquals(p[1], w[0], EPS);
        assertEquals(p[3], w[1], EPS);
        assertTrue(w[0] + w[1] < 0.99f,
                "norm_topk_prob=false keeps raw probabilities, sum " + (w[0] + w[1]));
        assertEquals(1, rr.tokens());
        assertEquals(2, rr.topK());
    }

    @Test
    void mixtralRenormalisesTopKWeights() {
        float[][] rows = {
                {0.5f, 2.0f, -1.0f, 1.0f},
                {3.0f, -2.0f, 0.0f, 2.5f},
                {-0.3f, -0.1f, -0.2f, -4.0f},
        };
        Routes rr = route(true, logits(rows), 2);
        float[] w = weights(rr);
        assertArrayEquals(new int[] {1, 3, 0, 3, 1, 2}, rr.experts());
        for (int t = 0; t < rows.length; t++) {
            double[] p = softmax(rows[t]);
            int a = rr.experts()[2 * t];
            int b = rr.experts()[2 * t + 1];
            double sum = p[a] + p[b];
            assertEquals(p[a] / sum, w[2 * t], EPS, "token " + t + " first weight");
            assertEquals(p[b] / sum, w[2 * t + 1], EPS, "token " + t + " second weight");
            assertEquals(1.0f, w[2 * t] + w[2 * t + 1], EPS, "token " + t + " weights sum");
        }
        assertEquals(3, rr.tokens());
    }

    /**
     * gpt-oss routes by top-k of the raw logits (router bias included), then a softmax over those k only
     * (GptOssTopKRouter): computed here directly as torch does, it is the renormalised softmax rule.
     */
    @Test
    void gptOssSoftmaxOverTheTopKLogitsIsTheRenormalisedRule() {
        Nd4j.getRandom().setSeed(5);
        int e = 8;
        int k = 3;
        INDArray x = Nd4j.randn(DataType.FLOAT, 20, 6);
        INDArray w = Nd4j.randn(DataType.FLOAT, e, 6);
        INDArray b = Nd4j.randn(DataType.FLOAT, e).muli(2);
        Router router = new Router(w, b, null);
        INDArray logits = router.logits(x);                                       // [T, E] = x·Wᵀ + b
        Routes r = router.route(logits, RoutingRule.softmaxTopK(k, true));
        float[] z = logits.dup('c').data().asFloat();
        for (int t = 0; t < 20; t++) {
            int[] top = new int[k];
            double[] row = new double[e];
            for (int j = 0; j < e; j++) {
                row[j] = z[t * e + j];
            }
            TopK.select(row, 0, e, k, null, top, 0);                               // top-k of the raw logits
            double max = row[top[0]];
            double sum = 0;
            for (int j : top) {
                sum += Math.exp(row[j] - max);
            }
            for (int slot = 0; slot < k; slot++) {
                assertEquals(top[slot], r.expert(t, slot), "token " + t + " slot " + slot);
                assertEquals(Math.exp(row[top[slot]] - max) / sum, r.weight(t, slot), EPS,
                        "token " + t + " slot " + slot + ": softmax over the selected logits");
            }
        }
    }

    @Test
    void weightsInDescendingOrder() {
        float[] row = {0.1f, 0.9f, 0.4f, 0.7f, 0.2f};
        Routes rr = route(false, logits(new float[][] {row}), 3);
        float[] w = weights(rr);
        assertArrayEquals(new int[] {1, 3, 2}, rr.experts());
        assertTrue(w[0] > w[1] && w[1] > w[2]);
    }

    @Test
    void tieGoesToLowerExpertIndex() {
        float[] row = {1.0f, 3.0f, 1.0f, 3.0f};
        Routes rr = route(true, logits(new float[][] {row}), 3);
        float[] w = weights(rr);
        assertArrayEquals(new int[] {1, 3, 0}, rr.experts());
        assertEquals(w[0], w[1]);
    }

    @Test
    void allEqualLogitsPickInIndexOrder() {
        Routes rr = route(true, logits(new float[][] {{0f, 0f, 0f, 0f}}), 2);
        float[] w = weights(rr);
        assertArrayEquals(new int[] {0, 1}, rr.experts());
        assertArrayEquals(new float[] {0.5f, 0.5f}, w, EPS);
    }

    @Test
    void kEqualsESelectsAll() {
        float[] row = {0.2f, -0.5f, 1.5f};
        double[] p = softmax(row);
        Routes rr = route(false, logits(new float[][] {row}), 3);
        float[] w = weights(rr);
        assertArrayEquals(new int[] {2, 0, 1}, rr.experts());
        assertEquals(p[2], w[0], EPS);
        assertEquals(p[0], w[1], EPS);
        assertEquals(p[1], w[2], EPS);
        assertEquals(1.0f, w[0] + w[1] + w[2], EPS,
                "all E probabilities sum to 1 even without renormalisation");
    }

    @Test
    void largeLogitsDoNotOverflow() {
        float[] row = {1000f, 999f, -1000f};
        double[] p = softmax(row);
        Routes rr = route(false, logits(new float[][] {row}), 2);
        float[] w = weights(rr);
        assertArrayEquals(new int[] {0, 1}, rr.experts());
        assertEquals(p[0], w[0], EPS);
        assertEquals(p[1], w[1], EPS);
    }

    @Test
    void logitsAreXTimesGateTransposed() {
        INDArray gate = Nd4j.createFromArray(new float[][] {{1, 0}, {0, 1}, {1, 1}}); // [E=3, D=2]
        INDArray x = Nd4j.createFromArray(new float[][] {{2, 3}, {-1, 4}});            // [T=2, D=2]
        INDArray logits = new Router(gate).logits(x);
        assertArrayEquals(new long[] {2, 3}, logits.shape());
        assertArrayEquals(new float[] {2, 3, 5, -1, 4, 3}, logits.dup('c').data().asFloat(), 0f);
        assertEquals(3, new Router(gate).experts());
    }

    @Test
    void topKZeroThrows() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> route(true, logits(new float[][] {{0, 1, 2, 3}}), 0));
        assertTrue(e.getMessage().contains("top-k must be at least 1") && e.getMessage().contains("got 0"),
                e.getMessage());
    }

    @Test
    void topKAboveExpertsThrows() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> route(true, logits(new float[][] {{0, 1, 2, 3}}), 5));
        assertTrue(e.getMessage().contains("top-k") && e.getMessage().contains("[1, 4]")
                && e.getMessage().contains("got 5"), e.getMessage());
    }

    /** {@link Router#rank} orders as {@link Router#route} chooses: its top-K prefix is the route, for every rule. */
    @Test
    void rankingPrefixIsTheRouteAndUnbiasedIsTheRouteWithoutTheBias() {
        java.util.Random rnd = new java.util.Random(31);
        float[] z = new float[50 * 8];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) rnd.nextGaussian();
        }
        INDArray logits = Nd4j.create(z, new long[] {50, 8}, 'c');
        double[] bias = {0.2, -0.1, 0.0, 0.3, -0.2, 0.1, 0.0, -0.3};
        RoutingRule glm = new RoutingRule(3, ScoreFunction.SIGMOID, true, 4, 2, RoutingRule.GroupRank.TOP2_SUM, 2.5);
        for (RoutingRule rule : new RoutingRule[] {glm, RoutingRule.softmaxTopK(3, true)}) {
            Router biased = new Router(Nd4j.zeros(DataType.FLOAT, 8, 2), null, bias);
            Router plain = new Router(Nd4j.zeros(DataType.FLOAT, 8, 2));
            Router.Ranking[] ranks = biased.rank(logits, rule);
            int[] route = biased.route(logits, rule).experts();
            int[] unbiased = plain.route(logits, rule).experts();
            int changed = 0;
            for (int t = 0; t < 50; t++) {
                assertArrayEquals(java.util.Arrays.copyOfRange(route, 3 * t, 3 * t + 3),
                        java.util.Arrays.copyOf(ranks[t].order(), 3), "token " + t);
                assertArrayEquals(java.util.Arrays.copyOfRange(unbiased, 3 * t, 3 * t + 3), ranks[t].unbiased());
                assertEquals(rule.groupLimited() ? 4 : 8, ranks[t].order().length, "the kept groups' experts");
                changed += java.util.Arrays.equals(ranks[t].unbiased(), java.util.Arrays.copyOf(ranks[t].order(), 3))
                        ? 0 : 1;
            }
            assertTrue(changed > 0, "the bias changes some selections");
        }
    }
}
