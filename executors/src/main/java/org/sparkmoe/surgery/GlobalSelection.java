package org.sparkmoe.surgery;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Which experts each of L MoE layers keeps when E' per layer is a budget over all layers ({@code surgery prune
 * --global}): the L·E' best (layer, expert) pairs by their layer's score share, with at least F per layer.
 *
 * <p>Scores of different layers are made comparable by dividing each layer's scores by the layer's sum (an expert's
 * share of its layer's total score): REAP and EAN scale with a layer's expert output norms, which differ from layer to
 * layer, and frequency sums to K in every layer (so its shares are the frequencies / K, the same ranking). A share keeps
 * the ratios inside a layer, so every layer's kept experts are its best by the original score.
 *
 * <p>The selection is greedy and optimal for the summed shares: each layer first takes its F best, then the remaining
 * L·(E' − F) places go to the highest remaining shares over all layers. Ties go to the lower layer, then the lower
 * expert, so each layer's kept set is a prefix of its order (share descending, index ascending).
 */
final class GlobalSelection {
    private GlobalSelection() {
    }

    /** [L][E] each layer's scores divided by their sum (all zero for a layer whose scores sum to zero). */
    static double[][] shares(double[][] scores) {
        double[][] out = new double[scores.length][];
        for (int l = 0; l < scores.length; l++) {
            double sum = 0;
            for (double s : scores[l]) {
                sum += s;
            }
            out[l] = new double[scores[l].length];
            for (int e = 0; e < out[l].length; e++) {
                out[l][e] = sum == 0 ? 0 : scores[l][e] / sum;
            }
        }
        return out;
    }

    /**
     * @param shares   [L][E] comparable scores (see {@link #shares}), every entry ≥ 0
     * @param perLayer E': L·E' experts are kept in all
     * @param floor    F ≤ E': every layer keeps at least F
     * @return [L][k_l] the kept experts of each layer, ascending, Σ k_l = L·E', F ≤ k_l ≤ E
     */
    static int[][] select(double[][] shares, int perLayer, int floor) {
        int layers = shares.length;
        int[][] order = new int[layers][];      // [L][E] each layer's experts by share descending, index ascending
        int[] taken = new int[layers];          // [L] how many of order[l] are kept
        for (int l = 0; l < layers; l++) {
            double[] s = shares[l];
            order[l] = java.util.stream.IntStream.range(0, s.length).boxed()
                    .sorted((a, b) -> s[a] != s[b] ? Double.compare(s[b], s[a]) : Integer.compare(a, b))
                    .mapToInt(Integer::intValue).toArray();
            taken[l] = floor;
        }
        List<int[]> rest = new ArrayList<>();   // (layer, rank in its order) beyond the floor
        for (int l = 0; l < layers; l++) {
            for (int r = floor; r < order[l].length; r++) {
                rest.add(new int[] {l, r});
            }
        }
        rest.sort((a, b) -> {
            double sa = shares[a[0]][order[a[0]][a[1]]];
            double sb = shares[b[0]][order[b[0]][b[1]]];
            return sa != sb ? Double.compare(sb, sa) : a[0] != b[0] ? Integer.compare(a[0], b[0])
                    : Integer.compare(a[1], b[1]);
        });
        for (int i = 0; i < layers * (perLayer - floor); i++) {
            taken[rest.get(i)[0]]++;
        }
        int[][] out = new int[layers][];
        for (int l = 0; l < layers; l++) {
            out[l] = Arrays.copyOf(order[l], taken[l]);
            Arrays.sort(out[l]);
        }
        return out;
    }
}
