package org.sparkmoe.routing;

import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.Softmax;

/**
 * How a router turns its logits into expert scores: {@link #SOFTMAX} over the E experts (Mixtral, Qwen2/3-MoE,
 * OLMoE, DeepSeek-V2) or an element-wise {@link #SIGMOID} (DeepSeek-V3, GLM-4.5). Rows are float64; with
 * {@code single} every operation is rounded to float32 where a float32 computation rounds.
 */
public enum ScoreFunction {
    SOFTMAX {
        @Override
        void apply(double[] v, int at, int n, boolean single) {
            Softmax.row(v, at, n, single);
        }

        @Override
        void backward(double[] scores, double[] dScores, int at, int n, double[] dz) {
            double dot = 0;
            for (int i = 0; i < n; i++) {
                dot += scores[at + i] * dScores[i];
            }
            for (int i = 0; i < n; i++) {
                dz[at + i] += scores[at + i] * (dScores[i] - dot);
            }
        }
    },
    SIGMOID {
        @Override
        void apply(double[] v, int at, int n, boolean single) {
            for (int i = 0; i < n; i++) {
                v[at + i] = Flat.round(1.0 / (1.0 + Math.exp(-v[at + i])), single);
            }
        }

        @Override
        void backward(double[] scores, double[] dScores, int at, int n, double[] dz) {
            for (int i = 0; i < n; i++) {
                double s = scores[at + i];
                dz[at + i] += s * (1 - s) * dScores[i];
            }
        }
    };

    /** v[at .. at+n) ← scores of the logits v[at .. at+n), in place. */
    abstract void apply(double[] v, int at, int n, boolean single);

    /**
     * The mirror of {@link #apply}: given the scores s = v[at .. at+n) and dL/ds in {@code dScores[0 .. n)}, adds
     * dL/dlogits to {@code dz[at .. at+n)}.
     */
    abstract void backward(double[] scores, double[] dScores, int at, int n, double[] dz);
}
