package org.sparkmoe.routing;

/**
 * How a trainable MoE block routes: the model's {@link RoutingRule}, Mixtral's {@code router_jitter_noise} (training
 * only: the input is multiplied by U(1 − j, 1 + j) noise before the router and the experts), and whether the router
 * weight receives a gradient.
 */
public record RouterOptions(RoutingRule rule, double jitter, boolean trainable) {

    public RouterOptions {
        if (!(jitter >= 0 && jitter < 1)) {
            throw new IllegalArgumentException("router jitter must be in [0, 1), got " + jitter);
        }
    }

    /** The model's own routing: no jitter, router frozen. */
    public static RouterOptions of(RoutingRule rule) {
        return new RouterOptions(rule, 0.0, false);
    }

    public int topK() {
        return rule.topK();
    }

    public RouterOptions withTopK(int k) {
        return new RouterOptions(rule.withTopK(k), jitter, trainable);
    }

    public RouterOptions withJitter(double routerJitterNoise) {
        return new RouterOptions(rule, routerJitterNoise, trainable);
    }

    public RouterOptions withTrainable(boolean trainRouter) {
        return new RouterOptions(rule, jitter, trainRouter);
    }
}
