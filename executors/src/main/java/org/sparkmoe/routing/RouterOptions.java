package org.sparkmoe.routing;

/**
 * How a trainable MoE block routes: the model's {@link RoutingRule}, a softmax temperature τ (logits / τ; 1 is the
 * models' own behaviour), Mixtral's {@code router_jitter_noise} (training only: the input is multiplied by
 * U(1 − j, 1 + j) noise before the router and the experts), and whether the router weight receives a gradient.
 */
public record RouterOptions(RoutingRule rule, double temperature, double jitter, boolean trainable) {

    public RouterOptions {
        if (!(temperature > 0) || Double.isInfinite(temperature)) {
            throw new IllegalArgumentException("router temperature must be positive and finite, got " + temperature);
        }
        if (!(jitter >= 0 && jitter < 1)) {
            throw new IllegalArgumentException("router jitter must be in [0, 1), got " + jitter);
        }
    }

    /** The model's own routing: τ = 1, no jitter, router frozen. */
    public static RouterOptions of(RoutingRule rule) {
        return new RouterOptions(rule, 1.0, 0.0, false);
    }

    public int topK() {
        return rule.topK();
    }

    public RouterOptions withTopK(int k) {
        return new RouterOptions(rule.withTopK(k), temperature, jitter, trainable);
    }

    public RouterOptions withTemperature(double tau) {
        return new RouterOptions(rule, tau, jitter, trainable);
    }

    public RouterOptions withJitter(double routerJitterNoise) {
        return new RouterOptions(rule, temperature, routerJitterNoise, trainable);
    }

    public RouterOptions withTrainable(boolean trainRouter) {
        return new RouterOptions(rule, temperature, jitter, trainRouter);
    }
}
