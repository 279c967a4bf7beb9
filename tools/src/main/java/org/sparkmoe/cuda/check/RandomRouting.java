package org.sparkmoe.cuda.check;

import java.util.SplittableRandom;
import org.sparkmoe.routing.RoutingPlan;

/** Random routing decisions for the GPU checks: K distinct experts per token, each with a U(0, 1) weight. */
final class RandomRouting {
    private RandomRouting() {
    }

    /**
     * The plan of {@code tokens} tokens, each routed to K distinct experts drawn from {@code first..end-1} (the other
     * experts of {@code numExperts} get no rows).
     *
     * @param experts [T·K] filled with the drawn experts (pair order), for the caller's records
     * @param gates   [T·K] filled with their weights
     */
    static RoutingPlan plan(SplittableRandom random, int tokens, int topK, int numExperts, int first, int end,
                            int[] experts, float[] gates) {
        if (end - first < topK) {
            throw new IllegalArgumentException("top-" + topK + " needs as many experts to draw from, got " + first
                    + ".." + (end - 1));
        }
        for (int t = 0; t < tokens; t++) {
            for (int slot = 0; slot < topK; slot++) {
                int ex;
                boolean repeated;
                do {
                    ex = first + random.nextInt(end - first);
                    repeated = false;
                    for (int q = 0; q < slot; q++) {
                        repeated |= experts[t * topK + q] == ex;
                    }
                } while (repeated);
                experts[t * topK + slot] = ex;
                gates[t * topK + slot] = (float) random.nextDouble();
            }
        }
        return RoutingPlan.build(experts, gates, numExperts, topK);
    }
}
