package org.sparkmoe.surgery;

import org.sparkmoe.kernels.Softmax;
import org.sparkmoe.routing.TopK;

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
        double[] w = new double[meanLogit.length];
        for (int e = 0; e < w.length; e++) {
            w[e] = meanLogit[e] / temperature;
        }
        Softmax.row(w, 0, w.length, false);
        return w;
    }

    /** The K largest weights kept (ties to the lower index), the rest zero, renormalised to sum 1. */
    public static double[] topKMask(double[] weights, int k) {
        if (k < 1 || k > weights.length) {
            throw new IllegalArgumentException("--top-k-mask must be in [1, " + weights.length + "], got " + k);
        }
        int[] kept = new int[k];
        TopK.select(weights, 0, weights.length, k, null, kept, 0);
        double sum = 0;
        for (int e : kept) {
            sum += weights[e];
        }
        double[] out = new double[weights.length];
        for (int e : kept) {
            out[e] = weights[e] / sum;
        }
        return out;
    }
}
