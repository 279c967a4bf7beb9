package org.sparkmoe.bench;

import org.sparkmoe.moe.RoutingPlan;

import java.util.Random;

/** Benchmark routing: every token picks K distinct experts uniformly at random (seeded), weights summing to 1. */
public final class SyntheticRouting {
    private SyntheticRouting() {
    }

    public static RoutingPlan plan(int tokens, int experts, int topK, long seed) {
        if (topK > experts) {
            throw new IllegalArgumentException("top-k " + topK + " exceeds experts " + experts);
        }
        Random rnd = new Random(seed);
        int[] chosen = new int[tokens * topK];      // [T·K]
        float[] weights = new float[tokens * topK]; // [T·K]
        int[] pool = new int[experts];
        for (int t = 0; t < tokens; t++) {
            for (int e = 0; e < experts; e++) {
                pool[e] = e;
            }
            float sum = 0;
            for (int k = 0; k < topK; k++) {          // partial Fisher-Yates: K distinct experts
                int j = k + rnd.nextInt(experts - k);
                int tmp = pool[k];
                pool[k] = pool[j];
                pool[j] = tmp;
                chosen[t * topK + k] = pool[k];
                weights[t * topK + k] = 0.5f + rnd.nextFloat();
                sum += weights[t * topK + k];
            }
            for (int k = 0; k < topK; k++) {
                weights[t * topK + k] /= sum;
            }
        }
        return RoutingPlan.build(chosen, weights, experts, topK);
    }
}
