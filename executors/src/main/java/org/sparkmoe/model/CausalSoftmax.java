package org.sparkmoe.model;

import java.util.Arrays;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.Softmax;

/**
 * The attention softmax of transformers' eager attention: every [S, S] score matrix is multiplied by the softmax
 * scale, then each query row i is soft-maxed over the keys it sees (j ≤ i, and j > i − window with a sliding
 * window); masked entries are 0. With sinks (gpt-oss), head h's sink logit joins every row's normaliser and is
 * dropped after, so the row sums to less than 1. Score matrix m belongs to head m mod H. Shared by {@link Attention}
 * and {@link LatentAttention}.
 */
final class CausalSoftmax {
    private final double scale;
    private final Integer window; // null = full causal
    private final double[] sinks; // [H] sink logits, or null

    /**
     * @param scale  the factor on q·kᵀ (hd^-½; MLA's qk_head_dim^-½ times YaRN's mscale²)
     * @param window sliding window, or null
     */
    CausalSoftmax(double scale, Integer window) {
        this(scale, window, null);
    }

    /** @param sinks the per-head sink logits [H], or null */
    CausalSoftmax(double scale, Integer window, double[] sinks) {
        this.scale = scale;
        this.window = window;
        this.sinks = sinks;
    }

    /** In place on {@code matrices} [S, S] float32 score matrices; returns {@code scores}. */
    float[] apply(float[] scores, int matrices, int seq) {
        float s = (float) scale;
        for (int m = 0; m < matrices; m++) {
            for (int i = 0; i < seq; i++) {
                int row = (m * seq + i) * seq;
                int first = firstVisible(i);
                for (int j = first; j <= i; j++) {
                    scores[row + j] *= s;
                }
                Softmax.row(scores, row + first, i - first + 1,
                        sinks == null ? Float.NEGATIVE_INFINITY : (float) sinks[m % sinks.length], scores, row + first);
                Arrays.fill(scores, row, row + first, 0f);
                Arrays.fill(scores, row + i + 1, row + seq, 0f);
            }
        }
        return scores;
    }

    /** {@link #apply(float[], int, int)} on float64 values, rounded to float32 where it rounds when single. */
    void apply(double[] scores, int matrices, int seq, boolean single) {
        double s = Flat.round(scale, single);
        for (int m = 0; m < matrices; m++) {
            for (int i = 0; i < seq; i++) {
                int row = (m * seq + i) * seq;
                int first = firstVisible(i);
                for (int j = first; j <= i; j++) {
                    scores[row + j] = Flat.round(scores[row + j] * s, single);
                }
                Softmax.row(scores, row + first, i - first + 1,
                        sinks == null ? Double.NEGATIVE_INFINITY : sinks[m % sinks.length], single);
                Arrays.fill(scores, row, row + first, 0.0);
                Arrays.fill(scores, row + i + 1, row + seq, 0.0);
            }
        }
    }

    /**
     * The mirror of {@link #apply(double[], int, int, boolean)}: dp → dscores in place, zero off the mask.
     *
     * @return dL/dsinks [H] (each row adds −p_sink·(p·dp), p_sink = 1 − Σ p), or null without sinks
     */
    double[] backward(double[] probs, double[] dProbs, int matrices, int seq) {
        double[] dSinks = sinks == null ? null : new double[sinks.length];
        for (int m = 0; m < matrices; m++) {
            for (int i = 0; i < seq; i++) {
                int row = (m * seq + i) * seq;
                int first = firstVisible(i);
                double dot = Softmax.rowBackward(probs, dProbs, row + first, i - first + 1);
                if (dSinks != null) {
                    double kept = 0;
                    for (int j = first; j <= i; j++) {
                        kept += probs[row + j];
                    }
                    dSinks[m % sinks.length] -= (1 - kept) * dot;
                }
                for (int j = first; j <= i; j++) {
                    dProbs[row + j] *= scale;
                }
                Arrays.fill(dProbs, row, row + first, 0.0);
                Arrays.fill(dProbs, row + i + 1, row + seq, 0.0);
            }
        }
        return dSinks;
    }

    /** The first key position query i sees: 0, or i − window + 1 with a sliding window. */
    private int firstVisible(int i) {
        return window == null ? 0 : Math.max(0, i - window + 1);
    }
}
