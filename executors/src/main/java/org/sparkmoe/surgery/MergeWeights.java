package org.sparkmoe.surgery;

/**
 * Per-expert weights for merging E experts into one dense FFN: uniform 1/E, or softmax(mean router logit / T) over
 * the experts; optionally masked to the K largest and renormalised (ties to the lower expert index).
 */
public final class MergeWeights {
    private MergeWeights() {
    }

    public static double[] uniform(int experts) {
        double[] w = new double[experts];
        java.util.Arrays.fill(w, 1.0 / experts);
        return w;
    }

    /** softmax(meanLogit / temperature) in float64, max-subtracted. */
    public static double[] routerWeighted(double[] meanLogit, double temperature) {
        if (!(temperature > 0) || Double.isInfinite(temperature)) {
            throw new IllegalArgumentException("--temperature must be a positive number, got " + temperature);
        }
        double max = Double.NEGATIVE_INFINITY;
        for (double v : meanLogit) {
            max = Math.max(max, v / temperature);
        }
        double[] w = new double[meanLogit.length];
        double sum = 0;
        for (int e = 0; e < w.length; e++) {
            w[e] = Math.exp(meanLogit[e] / temperature - max);
            sum += w[e];
        }
        for (int e = 0; e < w.length; e++) {
            w[e] /= sum;
        }
        return w;
    }

    /** The K largest weights kept (ties to the lower index), the rest zero, renormalised to sum 1. */
    public static double[] topKMask(double[] weights, int k) {
        if (k < 1 || k > weights.length) {
            throw new IllegalArgumentException("--top-k-mask must be in [1, " + weights.length + "], got " + k);
        }
        boolean[] kept = new boolean[weights.length];
        double sum = 0;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < weights.length; e++) {
                if (!kept[e] && (best < 0 || weights[e] > weights[best])) {
                    best = e;
                }
            }
            kept[best] = true;
            sum += weights[best];
        }
        double[] out = new double[weights.length];
        for (int e = 0; e < weights.length; e++) {
            out[e] = kept[e] ? weights[e] / sum : 0;
        }
        return out;
    }
}
