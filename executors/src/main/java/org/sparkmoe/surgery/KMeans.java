package org.sparkmoe.surgery;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

/**
 * Seeded k-means over a few points (experts): k-means++ seeding from one {@link Random}, then Lloyd iterations until
 * the assignment stops changing. Deterministic for a seed: distance ties go to the lower centre; when every remaining
 * point coincides with a centre, seeding takes the lowest unused point; an emptied cluster takes the point farthest
 * from its centre among clusters of two or more.
 *
 * <p>The points are read only through {@link Points#distances}: every centre is the mean of a set of points (a seed
 * or a refilled cluster's centre is the mean of one point, which is that point as far as any distance can tell:
 * 0 + x differs from x only for x = −0, whose square differences are the same), so points too large to hold
 * (an expert's flattened weights) can be streamed past the centres, one pass per step.
 */
public final class KMeans {
    private static final int MAX_ITERATIONS = 300;

    /** What the clustering reads of its points. */
    public interface Points {
        int size();

        /**
         * d[p][c] = Σⱼ (x_pj − m_cj)², summed in feature order from 0, with m_c = (Σ_{q ∈ centres[c]} x_q) / |centres[c]|
         * summed from 0 in member order — float64 throughout.
         *
         * @param centres each centre's members, ascending, none empty
         * @return [size][centres]
         */
        double[][] distances(int[][] centres);
    }

    private KMeans() {
    }

    /**
     * @param points [N][F]
     * @return the groups: k non-empty lists of point indices, each ascending, ordered by their smallest member
     */
    public static int[][] cluster(double[][] points, int k, long seed) {
        return cluster(inMemory(points), k, seed);
    }

    /** As {@link #cluster(double[][], int, long)}, the points read through their distances. */
    public static int[][] cluster(Points points, int k, long seed) {
        int n = points.size();
        if (k < 1 || k > n) {
            throw new IllegalArgumentException("k must be in [1, " + n + "], got " + k);
        }
        int[][] centres = seed(points, k, new Random(seed));
        int[] assign = new int[n];
        Arrays.fill(assign, -1);
        for (int iteration = 0; iteration < MAX_ITERATIONS; iteration++) {
            double[][] d = points.distances(centres);                  // [N][k]
            boolean changed = false;
            for (int p = 0; p < n; p++) {
                int c = nearest(d[p], k);
                changed |= c != assign[p];
                assign[p] = c;
            }
            refillEmpty(points, centres, assign, d);
            if (!changed) {
                break;
            }
            centres = members(assign, k);
        }
        return groups(assign, k);
    }

    /** The first k centres, each one point: a pass over the points per centre after the first. */
    private static int[][] seed(Points points, int k, Random rnd) {
        int n = points.size();
        int[][] centres = new int[k][];
        boolean[] used = new boolean[n];
        int first = rnd.nextInt(n);
        centres[0] = new int[] {first};
        used[first] = true;
        double[] d2 = new double[n];
        double[] nearest = new double[n];   // each point's distance to its nearest centre so far (ties: the lower)
        for (int c = 1; c < k; c++) {
            double[][] added = points.distances(new int[][] {centres[c - 1]});
            for (int p = 0; p < n; p++) {
                nearest[p] = c == 1 || added[p][0] < nearest[p] ? added[p][0] : nearest[p];
            }
            double total = 0;
            for (int p = 0; p < n; p++) {
                d2[p] = used[p] ? 0 : nearest[p];
                total += d2[p];
            }
            int pick = -1;
            if (total > 0) {
                double u = rnd.nextDouble() * total;
                for (int p = 0; p < n && pick < 0; p++) {
                    u -= d2[p];
                    if (d2[p] > 0 && u < 0) {
                        pick = p;
                    }
                }
                if (pick < 0) {
                    pick = lastPositive(d2);
                }
            } else {
                pick = firstUnused(used);
            }
            centres[c] = new int[] {pick};
            used[pick] = true;
        }
        return centres;
    }

    private static int lastPositive(double[] d2) {
        for (int p = d2.length - 1; p >= 0; p--) {
            if (d2[p] > 0) {
                return p;
            }
        }
        throw new IllegalStateException("no positive distance");
    }

    private static int firstUnused(boolean[] used) {
        for (int p = 0; p < used.length; p++) {
            if (!used[p]) {
                return p;
            }
        }
        throw new IllegalStateException("more centres than points");
    }

    /**
     * Gives every empty cluster the point farthest from its own centre among clusters of two or more members.
     *
     * @param d [N][k] the distances to {@code centres}, kept up to date as centres change
     */
    private static void refillEmpty(Points points, int[][] centres, int[] assign, double[][] d) {
        int k = centres.length;
        for (int c = 0; c < k; c++) {
            int[] sizes = new int[k];
            for (int a : assign) {
                sizes[a]++;
            }
            if (sizes[c] > 0) {
                continue;
            }
            int far = -1;
            double farD = -1;
            for (int p = 0; p < assign.length; p++) {
                double dp = d[p][assign[p]];
                if (sizes[assign[p]] > 1 && dp > farD) {
                    far = p;
                    farD = dp;
                }
            }
            assign[far] = c;
            centres[c] = new int[] {far};
            double[][] moved = points.distances(new int[][] {centres[c]});
            for (int p = 0; p < assign.length; p++) {
                d[p][c] = moved[p][0];
            }
        }
    }

    /** Each cluster's members, ascending. */
    private static int[][] members(int[] assign, int k) {
        int[] sizes = new int[k];
        for (int a : assign) {
            sizes[a]++;
        }
        int[][] out = new int[k][];
        for (int c = 0; c < k; c++) {
            out[c] = new int[sizes[c]];
        }
        int[] at = new int[k];
        for (int p = 0; p < assign.length; p++) {
            out[assign[p]][at[assign[p]]++] = p;
        }
        return out;
    }

    /** Points held in memory: one block of all F features. */
    static Points inMemory(double[][] points) {
        return new Points() {
            @Override
            public int size() {
                return points.length;
            }

            @Override
            public double[][] distances(int[][] centres) {
                double[][] d = new double[points.length][centres.length];
                accumulate(points, points[0].length, centres, d, new double[points[0].length]);
                return d;
            }
        };
    }

    /**
     * Adds one block of features to the distances: d[p][c] += Σⱼ (x_pj − m_cj)² over j &lt; len in order, with m_c the
     * members' mean of the block. Blocks added in feature order give exactly the sums over all features at once.
     *
     * @param block [N][≥ len] the points' values of this block's features
     * @param d     [N][k], updated
     * @param mean  [≥ len] scratch
     */
    static void accumulate(double[][] block, int len, int[][] centres, double[][] d, double[] mean) {
        for (int c = 0; c < centres.length; c++) {
            Arrays.fill(mean, 0, len, 0.0);
            for (int q : centres[c]) {
                for (int j = 0; j < len; j++) {
                    mean[j] += block[q][j];
                }
            }
            for (int j = 0; j < len; j++) {
                mean[j] /= centres[c].length;
            }
            for (int p = 0; p < block.length; p++) {
                double s = d[p][c];
                for (int j = 0; j < len; j++) {
                    double diff = block[p][j] - mean[j];
                    s += diff * diff;
                }
                d[p][c] = s;
            }
        }
    }

    /** The nearest of k centres by the distances {@code d} [k] (ties: the lower). */
    private static int nearest(double[] d, int k) {
        int best = 0;
        double bestD = d[0];
        for (int c = 1; c < k; c++) {
            if (d[c] < bestD) {
                best = c;
                bestD = d[c];
            }
        }
        return best;
    }

    private static int[][] groups(int[] assign, int k) {
        List<List<Integer>> lists = new ArrayList<>();
        for (int c = 0; c < k; c++) {
            lists.add(new ArrayList<>());
        }
        for (int p = 0; p < assign.length; p++) {
            lists.get(assign[p]).add(p);
        }
        lists.sort((a, b) -> Integer.compare(a.get(0), b.get(0)));
        int[][] out = new int[k][];
        for (int c = 0; c < k; c++) {
            out[c] = lists.get(c).stream().mapToInt(Integer::intValue).toArray();
        }
        return out;
    }
}
