package org.sparkmoe.moe;

/**
 * How a trainable MoE block routes: top-K, renormalisation of the K weights (Mixtral always; Qwen2-MoE when
 * {@code norm_topk_prob}), softmax temperature τ (logits / τ; 1 is the models' own behaviour), Mixtral's
 * {@code router_jitter_noise} (training only: the input is multiplied by U(1 − j, 1 + j) noise before the router
 * and the experts), and whether the router weights receive a gradient.
 */
public record RouterOptions(int topK, boolean normalizeTopK, double temperature, double jitter, boolean trainable) {

    public RouterOptions {
        if (topK < 1) {
            throw new IllegalArgumentException("top-k must be at least 1, got " + topK);
        }
        if (!(temperature > 0) || Double.isInfinite(temperature)) {
            throw new IllegalArgumentException("router temperature must be positive and finite, got " + temperature);
        }
        if (!(jitter >= 0 && jitter < 1)) {
            throw new IllegalArgumentException("router jitter must be in [0, 1), got " + jitter);
        }
    }

    /** Mixtral: renormalised top-K, τ = 1, no jitter, router frozen. */
    public static RouterOptions mixtral(int topK) {
        return new RouterOptions(topK, true, 1.0, 0.0, false);
    }

    /** Qwen2-MoE: renormalised only when {@code norm_topk_prob}, τ = 1, router frozen. */
    public static RouterOptions qwen2Moe(int topK, boolean normTopkProb) {
        return new RouterOptions(topK, normTopkProb, 1.0, 0.0, false);
    }

    public RouterOptions withTemperature(double tau) {
        return new RouterOptions(topK, normalizeTopK, tau, jitter, trainable);
    }

    public RouterOptions withJitter(double routerJitterNoise) {
        return new RouterOptions(topK, normalizeTopK, temperature, routerJitterNoise, trainable);
    }

    public RouterOptions withTrainable(boolean trainRouter) {
        return new RouterOptions(topK, normalizeTopK, temperature, jitter, trainRouter);
    }
}
