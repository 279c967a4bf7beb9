package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.routing.Routes;

/**
 * gpt-oss's expert biases in low-rank experts. Each token's FFN mixes its K experts' biases with the weights that mix
 * their LoRA terms: a projection's output gets {@code Σ_k g_k·c_{e_k}}, computed as {@code G·c} with the dense
 * routing weights G [T, E] (G[t, e_k] = g_k, zero elsewhere) and the stacked biases c [E, out]. The biases are frozen;
 * the backward pass gives the routing weights' part {@code dL/dg_k += ⟨dout[t], c_{e_k}⟩}.
 */
final class LowRankBiases {
    private LowRankBiases() {
    }

    /** G [T, E]: g_k at (t, e_k), zero elsewhere, in {@code dt}. */
    static INDArray denseWeights(Routes routes, int experts, DataType dt, LowRankScratch scratch) {
        int t = routes.tokens();
        double[] g = new double[t * experts];
        for (int token = 0; token < t; token++) {
            for (int k = 0; k < routes.topK(); k++) {
                g[token * experts + routes.expert(token, k)] = routes.weight(token, k);
            }
        }
        return scratch.count(Nd4j.create(g, new long[] {t, experts}, dt));
    }

    /** out [T, out] += G [T, E] · c [E, out]. */
    static void add(INDArray g, INDArray c, INDArray out) {
        Nd4j.gemm(g, c, out, false, false, 1.0, 1.0);
    }

    /** dL/dg of pair p = t·K + k [T·K] += ⟨dout[t], c_{e_k}⟩ for dout [T, out], c [E, out]. */
    static void addWeightGradients(Routes routes, INDArray dout, INDArray c, double[] dWeightOfPair) {
        INDArray dg = dout.mmul(c.transpose());                                      // [T, E]
        for (int t = 0; t < routes.tokens(); t++) {
            for (int k = 0; k < routes.topK(); k++) {
                dWeightOfPair[t * routes.topK() + k] += dg.getDouble(t, routes.expert(t, k));
            }
        }
    }
}
