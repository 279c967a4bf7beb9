package org.sparkmoe.calib;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.ScoreFunction;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LayerRouterStatsTest {
    private static final int E = 8;
    private static final int K = 2;

    private static INDArray randomLogits(int tokens, long seed) {
        Random random = new Random(seed);
        float[] z = new float[tokens * E];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) (random.nextGaussian() * 2 + (i % E == 3 ? 1.5 : 0)); // expert 3 is favoured
        }
        return Nd4j.create(z, new long[] {tokens, E}, 'c');
    }

    private static Router.Ranking[] select(INDArray logits, int k) {
        return new Router(Nd4j.zeros(DataType.FLOAT, logits.size(1), 4)).rank(logits, RoutingRule.softmaxTopK(k, true));
    }

    private static LayerRouterStats stats(INDArray logits, int from, int to) {
        LayerRouterStats s = new LayerRouterStats(E, K);
        INDArray part = logits.get(NDArrayIndex.interval(from, to), NDArrayIndex.all());
        s.add(part, select(part, K));
        return s;
    }

    /** Two tokens, three experts, top-2; every number worked out by hand (in double, from the float32 softmax). */
    @Test
    void handComputedTwoTokens() {
        INDArray logits = Nd4j.create(new float[] {0f, 1f, 2f, 3f, 0f, 0f}, new long[] {2, 3}, 'c');
        LayerRouterStats s = new LayerRouterStats(3, 2);
        s.add(logits, select(logits, 2));   // token 0 chooses {2, 1}, token 1 {0, 1} (ties to the lower index)
        double z = 1 + Math.E + Math.E * Math.E;
        double[] p1 = {1 / z, Math.E / z, Math.E * Math.E / z};
        double w = Math.exp(3) + 2;
        double[] p2 = {Math.exp(3) / w, 1 / w, 1 / w};
        assertArrayEquals(new long[] {1, 2, 1}, s.count());
        assertEquals(2, s.tokens());
        assertArrayEquals(new long[][] {{1, 1, 0}, {1, 2, 1}, {0, 1, 1}}, s.coselect());
        double[] probSum = s.probSum();
        for (int e = 0; e < 3; e++) {
            assertEquals(p1[e] + p2[e], probSum[e], 1e-7);
        }
        assertArrayEquals(new double[] {3, 1, 2}, s.logitSum(), 0.0);
        double entropy = 0;
        for (double[] p : new double[][] {p1, p2}) {
            for (double v : p) {
                entropy -= v * Math.log(v);
            }
        }
        assertEquals(entropy, s.entropySum(), 1e-6);
        // top-1 renormalised is always 1; top-2 of p1 is {p1[2], p1[1]}, of p2 {p2[0], p2[1]}
        double top2 = (p1[2] * p1[2] + p1[1] * p1[1]) / Math.pow(p1[2] + p1[1], 2)
                + (p2[0] * p2[0] + p2[1] * p2[1]) / Math.pow(p2[0] + p2[1], 2);
        double top3 = Arrays.stream(p1).map(v -> v * v).sum() + Arrays.stream(p2).map(v -> v * v).sum();
        assertArrayEquals(new double[] {2, top2, top3}, s.topmSqSum(), 1e-6);
        assertEquals(2 / (4 / 3.0), s.maxOverMeanLoad(), 1e-12);
    }

    @Test
    void anySplitAndMergeOrderGivesIdenticalBits() {
        INDArray logits = randomLogits(600, 3);
        LayerRouterStats whole = stats(logits, 0, 600);
        int[] cuts = {0, 17, 18, 250, 401, 600};
        List<LayerRouterStats> parts = new ArrayList<>();
        for (int i = 0; i + 1 < cuts.length; i++) {
            parts.add(stats(logits, cuts[i], cuts[i + 1]));
        }
        Collections.shuffle(parts, new Random(5));
        LayerRouterStats left = new LayerRouterStats(E, K).merge(parts.get(0)).merge(parts.get(1));
        LayerRouterStats right = new LayerRouterStats(E, K);
        for (LayerRouterStats part : parts.subList(2, parts.size())) {
            right.merge(part);
        }
        LayerRouterStats tree = right.merge(left);
        assertTrue(whole.sameAs(tree));
        assertEquals(600, tree.tokens());
        assertEquals(600L * K, Arrays.stream(tree.count()).sum());
        assertTrue(tree.count()[3] > tree.count()[0], "expert 3 is favoured by construction");
        long[][] co = tree.coselect();
        for (int i = 0; i < E; i++) {
            assertEquals(tree.count()[i], co[i][i]);
            for (int j = 0; j < E; j++) {
                assertEquals(co[i][j], co[j][i]);
            }
        }
        assertEquals(600.0, Arrays.stream(tree.probSum()).sum(), 1e-6 * 600); // float32 softmax rows sum to 1 ± ~1e-7
        assertEquals(600.0, tree.topmSqSum()[0], 0.0);
    }

    @Test
    void mergingMismatchedStatisticsFails() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new LayerRouterStats(E, K).merge(new LayerRouterStats(E, 1)));
        assertTrue(e.getMessage().contains("top-1"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new LayerRouterStats(E, E + 1));
        assertThrows(IllegalArgumentException.class,
                () -> new LayerRouterStats(E, K).add(randomLogits(3, 1), select(randomLogits(2, 1), K)));
        IllegalArgumentException kind = assertThrows(IllegalArgumentException.class,
                () -> new LayerRouterStats(E, K).merge(new LayerRouterStats(E, K, true, 2, true)));
        assertTrue(kind.getMessage().contains("another kind of router"), kind.getMessage());
    }

    /**
     * A GLM-4.5 router (sigmoid, 2 groups of 2, 1 kept, top-1, a correction bias) on two tokens, worked by hand.
     * Token 0: logits {2, 0, 0, 1}, bias {0, 0, 0.5, 0}: scores σ = {.881, .5, .5, .731}, corrected {.881, .5, 1, .731};
     * groups ranked by their top-2 corrected sums 1.381 and 1.731 → group 1 kept → top-1 = expert 2 (corrected 1);
     * without the bias group 0 (1.381 > 1.231) and expert 0: the bias changes this token. Token 1: logits {0, 3, 0, 0}:
     * corrected {.5, .953, 1, .5}, sums 1.453 and 1.5 → group 1, expert 2; without the bias group 0 (1.453 > 1),
     * expert 1: changed too.
     */
    @Test
    void sigmoidGroupedBiasedRouterRecordsTheBiasEffectAndGroupLoad() {
        INDArray logits = Nd4j.create(new float[] {2f, 0f, 0f, 1f, 0f, 3f, 0f, 0f}, new long[] {2, 4}, 'c');
        Router router = new Router(Nd4j.zeros(DataType.FLOAT, 4, 3), null, new double[] {0, 0, 0.5, 0});
        RoutingRule rule = new RoutingRule(1, ScoreFunction.SIGMOID, true, 2, 1, RoutingRule.GroupRank.TOP2_SUM, 1.0);
        LayerRouterStats s = new LayerRouterStats(4, 1, true, 2, true);
        s.add(logits, router.rank(logits, rule));
        assertArrayEquals(new long[] {0, 0, 2, 0}, s.count());
        assertArrayEquals(new long[] {0, 2}, s.groupKept());
        assertArrayEquals(new long[] {0, 2}, s.groupLoad());
        assertEquals(2, s.biasChangedTokens());
        assertEquals(2, s.biasChangedSelections());
        double sig2 = 1 / (1 + Math.exp(-2));
        double sig1 = 1 / (1 + Math.exp(-1));
        double sig3 = 1 / (1 + Math.exp(-3));
        assertArrayEquals(new double[] {sig2 + 0.5, 0.5 + sig3, 1.0, sig1 + 0.5}, s.probSum(), 1e-6);
        // scores: .881 → bin 18, .5 ×4 → bin 15, .731 → bin 17, .953 → bin 19; corrected: the two 1.0 → bin 20
        long[] before = s.scoreHistogram();
        assertEquals(5, before[15]);
        assertEquals(1, before[17]);
        assertEquals(1, before[18]);
        assertEquals(1, before[19]);
        assertEquals(2, s.correctedHistogram()[20]);
        assertEquals(3, s.correctedHistogram()[15], "the three 0.5 scores without a bias entry");
        // top-m over the kept group only: token 0 order {2 (.5), 3 (.731)}, token 1 {2 (.5), 3 (.5)}
        double top2 = (0.25 + sig1 * sig1) / Math.pow(0.5 + sig1, 2) + 0.5;
        assertArrayEquals(new double[] {2, top2, 0, 0}, s.topmSqSum(), 1e-6);
        LayerRouterStats merged = s.emptyLike().merge(s);
        assertTrue(merged.sameAs(s));
    }
}
