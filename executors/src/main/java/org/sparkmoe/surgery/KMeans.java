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
 */
public final class KMeans {
    private static final int MAX_ITERATIONS = 300;

    private KMeans() {
    }

    /**
     * @param points [N][F]
     * @return the groups: k non-empty lists of point indices, each ascending, ordered by their smallest member
     */
    public static int[][] cluster(double[][] points, int k, long seed) {
        int n = points.length;
        if (k < 1 || k > n) {
            throw new IllegalArgumentException("k must be in [1, " + n + "], got " + k);
        }
        double[][] centres = seed(points, k, new Random(seed));
        int[] assign = new int[n];
        Arrays.fill(assign, -1);
        for (int iteration = 0; iteration < MAX_ITERATIONS; iteration++) {
            boolean changed = false;
            for (int p = 0; p < n; p++) {
                int c = nearest(points[p], centres);
                changed |= c != assign[p];
                assign[p] = c;
            }
            refillEmpty(points, centres, assign);
            if (!changed) {
                break;
            }
            centres = means(points, assign, k);
        }
        return groups(assign, k);
    }

    private static double[][] seed(double[][] points, int k, Random rnd) {
        int n = points.length;
        double[][] centres = new double[k][];
        boolean[] used = new boolean[n];
        int first = rnd.nextInt(n);
        centres[0] = points[first].clone();
        used[first] = true;
        double[] d2 = new double[n];
        for (int c = 1; c < k; c++) {
            double total = 0;
            for (int p = 0; p < n; p++) {
                d2[p] = used[p] ? 0 : distance2(points[p], centres[nearest(points[p], Arrays.copyOf(centres, c))]);
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
            centres[c] = points[pick].clone();
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

    /** Gives every empty cluster the point farthest from its own centre among clusters of two or more members. */
    private static void refillEmpty(double[][] points, double[][] centres, int[] assign) {
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
            for (int p = 0; p < points.length; p++) {
                double d = distance2(points[p], centres[assign[p]]);
                if (sizes[assign[p]] > 1 && d > farD) {
                    far = p;
                    farD = d;
                }
            }
            assign[far] = c;
            centres[c] = points[far].clone();
        }
    }

    private static double[][] means(double[][] points, int[] assign, int k) {
        int f = points[0].length;
        double[][] sums = new double[k][f];
        int[] sizes = new int[k];
        for (int p = 0; p < points.length; p++) {
            sizes[assign[p]]++;
            for (int j = 0; j < f; j++) {
                sums[assign[p]][j] += points[p][j];
            }
        }
        for (int c = 0; c < k; c++) {
            for (int j = 0; j < f; j++) {
                sums[c][j] /= sizes[c];
            }
        }
        return sums;
    }

    static int nearest(double[] point, double[][] centres) {
        int best = 0;
        double bestD = distance2(point, centres[0]);
        for (int c = 1; c < centres.length; c++) {
            double d = distance2(point, centres[c]);
            if (d < bestD) {
                best = c;
                bestD = d;
            }
        }
        return best;
    }

    static double distance2(double[] a, double[] b) {
        double s = 0;
        for (int j = 0; j < a.length; j++) {
            double d = a[j] - b[j];
            s += d * d;
        }
        return s;
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
