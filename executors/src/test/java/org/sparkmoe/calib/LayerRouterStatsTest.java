package org.sparkmoe.calib;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RoutingRule;

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

    private static int[] select(INDArray logits, int k) {
        return new Router(Nd4j.zeros(DataType.FLOAT, logits.size(1), 4)).route(logits, RoutingRule.softmaxTopK(k, true))
                .experts();
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
        s.add(logits, new int[] {2, 1, 0, 1});
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
                () -> new LayerRouterStats(E, K).add(randomLogits(3, 1), new int[5]));
    }
}
