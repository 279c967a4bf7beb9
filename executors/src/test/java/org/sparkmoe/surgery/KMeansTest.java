package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class KMeansTest {
    /** Three tight clumps far apart: {0, 3}, {1, 4, 6}, {2, 5}, whatever the seed. */
    @Test
    void findsSeparatedClumpsForEverySeed() {
        double[][] points = {{0, 0}, {10, 10}, {-10, 10}, {0.1, 0}, {10, 10.1}, {-10, 10.2}, {10.2, 10}};
        for (long seed = 0; seed < 20; seed++) {
            int[][] groups = KMeans.cluster(points, 3, seed);
            assertArrayEquals(new int[][] {{0, 3}, {1, 4, 6}, {2, 5}}, groups, "seed " + seed);
        }
    }

    @Test
    void sameSeedSameGroupsAndEveryPointOnce() {
        Random rnd = new Random(5);
        double[][] points = new double[8][4];
        for (double[] p : points) {
            for (int j = 0; j < p.length; j++) {
                p[j] = rnd.nextGaussian();
            }
        }
        for (int k = 1; k <= 8; k++) {
            int[][] a = KMeans.cluster(points, k, 42);
            assertArrayEquals(a, KMeans.cluster(points, k, 42));
            assertEquals(k, a.length);
            boolean[] seen = new boolean[8];
            int total = 0;
            for (int[] g : a) {
                for (int e : g) {
                    assertEquals(false, seen[e]);
                    seen[e] = true;
                    total++;
                }
            }
            assertEquals(8, total);
        }
    }

    /** Identical points: seeding falls back to unused points, and no cluster is left empty. */
    @Test
    void duplicatePointsStillGiveKNonEmptyGroups() {
        double[][] points = {{1, 1}, {1, 1}, {1, 1}, {1, 1}};
        int[][] groups = KMeans.cluster(points, 3, 7);
        assertEquals(3, groups.length);
        for (int[] g : groups) {
            assertEquals(true, g.length > 0);
        }
    }

    @Test
    void kOutOfRangeFails() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> KMeans.cluster(new double[][] {{0}, {1}}, 3, 1));
        assertEquals("k must be in [1, 2], got 3", e.getMessage());
    }
}
