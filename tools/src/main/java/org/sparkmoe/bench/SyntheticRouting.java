package org.sparkmoe.bench;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.Routes;

import java.util.Random;

/**
 * Benchmark routing: every token's router logits are drawn U(0, 4) (seeded), so it picks K distinct experts
 * uniformly at random; softmax, top-K, weights renormalised to sum 1 (Mixtral's rule).
 */
public final class SyntheticRouting {
    private SyntheticRouting() {
    }

    public static Routes routes(int tokens, int experts, int topK, long seed) {
        if (topK > experts) {
            throw new IllegalArgumentException("top-k " + topK + " exceeds experts " + experts);
        }
        Random rnd = new Random(seed);
        float[] logits = new float[tokens * experts];                                  // [T, E]
        for (int i = 0; i < logits.length; i++) {
            logits[i] = 4 * rnd.nextFloat();
        }
        Router router = new Router(Nd4j.zeros(DataType.FLOAT, experts, 1));            // only E matters here
        INDArray z = Nd4j.create(logits, new long[] {tokens, experts}, 'c');
        return router.route(z, RoutingRule.softmaxTopK(topK, true));
    }
}
