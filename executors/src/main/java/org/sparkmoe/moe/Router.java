package org.sparkmoe.moe;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Softmax;

/**
 * The gate of an MoE layer: {@code logits [T,E] = x [T,D] · Wgᵀ}, softmax over E in float32, top-K,
 * and (Mixtral always, Qwen2-MoE when {@code norm_topk_prob}) renormalisation of the K weights.
 */
public final class Router {
    private final INDArray gate;        // [E, D]
    private final boolean normalizeTopK;

    public Router(INDArray gate, boolean normalizeTopK) {
        this.gate = gate;
        this.normalizeTopK = normalizeTopK;
    }

    public int experts() {
        return (int) gate.size(0);
    }

    /** @return the gate weight [E, D] (frozen; do not modify) */
    public INDArray gate() {
        return gate;
    }

    public boolean normalizeTopK() {
        return normalizeTopK;
    }

    /** @return router logits [T, E] */
    public INDArray logits(INDArray x) {
        return Dense.linear(x, gate);
    }

    /** Top-K routing from logits [T, E]; ties go to the lower expert index. */
    public Routing route(INDArray logits, int topK) {
        int tokens = (int) logits.size(0);
        int numExperts = (int) logits.size(1);
        if (topK < 1 || topK > numExperts) {
            throw new IllegalArgumentException("top-k must be in [1, " + numExperts + "], got " + topK);
        }
        float[] all = logits.dup('c').data().asFloat();
        float[] probs = new float[numExperts];
        int[] experts = new int[tokens * topK];
        float[] weights = new float[tokens * topK];
        for (int t = 0; t < tokens; t++) {
            Softmax.row(all, t * numExperts, numExperts, probs, 0);
            selectTopK(probs, topK, experts, weights, t * topK);
            if (normalizeTopK) {
                float sum = 0f;
                for (int j = 0; j < topK; j++) {
                    sum += weights[t * topK + j];
                }
                for (int j = 0; j < topK; j++) {
                    weights[t * topK + j] /= sum;
                }
            }
        }
        return new Routing(experts, weights, topK);
    }

    /** Writes the K largest of {@code probs} in descending order (stable for ties) at {@code at}. */
    private static void selectTopK(float[] probs, int topK, int[] experts, float[] weights, int at) {
        for (int j = 0; j < topK; j++) {
            int best = -1;
            for (int e = 0; e < probs.length; e++) {
                if (isTaken(experts, at, j, e)) {
                    continue;
                }
                if (best < 0 || probs[e] > probs[best]) {
                    best = e;
                }
            }
            experts[at + j] = best;
            weights[at + j] = probs[best];
        }
    }

    private static boolean isTaken(int[] experts, int at, int filled, int e) {
        for (int j = 0; j < filled; j++) {
            if (experts[at + j] == e) {
                return true;
            }
        }
        return false;
    }
}
