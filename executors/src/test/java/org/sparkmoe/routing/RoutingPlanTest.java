package org.sparkmoe.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

class RoutingPlanTest {

    /**
     * T = 4 tokens, K = 2, E = 4. Pairs p = token·K + slot:
     * token 0 → (2, 1), token 1 → (0, 2), token 2 → (2, 0), token 3 → (1, 2); expert 3 gets nothing.
     */
    private static final int[] EXPERTS = {2, 1, 0, 2, 2, 0, 1, 2};
    private static final float[] WEIGHTS = {0.6f, 0.4f, 0.7f, 0.3f, 0.55f, 0.45f, 0.8f, 0.2f};

    @Test
    void offsetsCountRowsPerExpert() {
        RoutingPlan plan = RoutingPlan.build(EXPERTS, WEIGHTS, 4, 2);
        // expert 0: pairs 2, 5; expert 1: 1, 6; expert 2: 0, 3, 4, 7; expert 3: none
        assertArrayEquals(new int[] {0, 2, 4, 8, 8}, plan.offsets);
        assertEquals(2, plan.tokensOf(0));
        assertEquals(2, plan.tokensOf(1));
        assertEquals(4, plan.tokensOf(2));
        assertEquals(0, plan.tokensOf(3));
        assertEquals(8, plan.rows());
        assertEquals(2, plan.topK);
    }

    @Test
    void rowsOfEachExpertInTokenOrder() {
        RoutingPlan plan = RoutingPlan.build(EXPERTS, WEIGHTS, 4, 2);
        assertArrayEquals(new int[] {2, 5, 1, 6, 0, 3, 4, 7}, plan.perm);
        assertArrayEquals(new int[] {1, 2, 0, 3, 0, 1, 2, 3}, plan.tokenOfRow);
        assertArrayEquals(new float[] {0.7f, 0.45f, 0.4f, 0.8f, 0.6f, 0.3f, 0.55f, 0.2f}, plan.weightOfRow);
    }

    @Test
    void randomPlansAreConsistent() {
        Random rnd = new Random(42);
        int numExperts = 7;
        int topK = 3;
        int tokens = 50;
        int[] experts = new int[tokens * topK];
        float[] weights = new float[tokens * topK];
        for (int t = 0; t < tokens; t++) {
            // K distinct experts per token, as a router produces
            int[] shuffled = shuffledExperts(rnd, numExperts);
            for (int j = 0; j < topK; j++) {
                experts[t * topK + j] = shuffled[j];
                weights[t * topK + j] = rnd.nextFloat();
            }
        }
        RoutingPlan plan = RoutingPlan.build(experts, weights, numExperts, topK);

        assertEquals(0, plan.offsets[0]);
        assertEquals(tokens * topK, plan.offsets[numExperts]);
        boolean[] seen = new boolean[tokens * topK];
        for (int e = 0; e < numExperts; e++) {
            int count = 0;
            for (int x : experts) {
                count += x == e ? 1 : 0;
            }
            assertEquals(count, plan.tokensOf(e), "rows of expert " + e);
            int previousPair = -1;
            for (int row = plan.offsets[e]; row < plan.offsets[e + 1]; row++) {
                int p = plan.perm[row];
                assertEquals(e, experts[p], "plan row " + row + " lies in expert " + e + "'s range");
                assertTrue(p > previousPair, "expert " + e + " rows not in token order at plan row " + row);
                previousPair = p;
                assertEquals(p / topK, plan.tokenOfRow[row], "tokenOfRow[" + row + "]");
                assertEquals(weights[p], plan.weightOfRow[row], "weightOfRow[" + row + "]");
                assertTrue(!seen[p], "pair " + p + " appears twice");
                seen[p] = true;
            }
        }
        for (int p = 0; p < seen.length; p++) {
            assertTrue(seen[p], "pair " + p + " missing from the plan");
        }
    }

    private static int[] shuffledExperts(Random rnd, int n) {
        int[] a = new int[n];
        for (int i = 0; i < n; i++) {
            a[i] = i;
        }
        for (int i = n - 1; i > 0; i--) {
            int j = rnd.nextInt(i + 1);
            int tmp = a[i];
            a[i] = a[j];
            a[j] = tmp;
        }
        return a;
    }

    @Test
    void allTokensToOneExpert() {
        RoutingPlan plan = RoutingPlan.build(new int[] {1, 1, 1}, new float[] {1f, 1f, 1f}, 3, 1);
        assertArrayEquals(new int[] {0, 0, 3, 3}, plan.offsets);
        assertArrayEquals(new int[] {0, 1, 2}, plan.tokenOfRow);
    }

    @Test
    void expertIndexTooLargeThrows() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> RoutingPlan.build(new int[] {0, 4}, new float[] {0.5f, 0.5f}, 4, 2));
        assertTrue(e.getMessage().contains("expert index 4"), e.getMessage());
        assertTrue(e.getMessage().contains("[0, 4)"), e.getMessage());
    }

    @Test
    void negativeExpertIndexThrows() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> RoutingPlan.build(new int[] {-1, 2}, new float[] {0.5f, 0.5f}, 4, 2));
        assertTrue(e.getMessage().contains("expert index -1"), e.getMessage());
    }
}
