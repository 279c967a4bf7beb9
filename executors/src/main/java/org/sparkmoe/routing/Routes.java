package org.sparkmoe.routing;

/**
 * A routing decision for T tokens and what its backward pass needs: the scores [T, E] of every expert, the K
 * selected experts and their weights g per token (pairs p = token·K + slot, slots in descending selection order),
 * and the plan (pairs sorted by expert). Float64 values; {@code single} when they were rounded to float32 as a
 * float32 router computes them. Immutable.
 */
public final class Routes {
    public final RoutingPlan plan;
    private final RoutingRule rule;
    private final double[] scores;   // [T·E]
    private final int[] experts;     // [T·K]
    private final double[] weights;  // [T·K]
    private final int numExperts;

    Routes(RoutingRule rule, double[] scores, int[] experts, double[] weights, int numExperts) {
        this.rule = rule;
        this.scores = scores;
        this.experts = experts;
        this.weights = weights;
        this.numExperts = numExperts;
        float[] planWeights = new float[weights.length];
        for (int p = 0; p < weights.length; p++) {
            planWeights[p] = (float) weights[p];
        }
        this.plan = RoutingPlan.build(experts, planWeights, numExperts, rule.topK());
    }

    public int tokens() {
        return experts.length / rule.topK();
    }

    public int topK() {
        return rule.topK();
    }

    public int numExperts() {
        return numExperts;
    }

    /** The selected expert of token t, slot k. */
    public int expert(int t, int k) {
        return experts[t * rule.topK() + k];
    }

    /** The routing weight g of token t, slot k. */
    public double weight(int t, int k) {
        return weights[t * rule.topK() + k];
    }

    /** The routing weight g of pair p = token·K + slot. */
    public double weightOfPair(int p) {
        return weights[p];
    }

    /** @return [T·K] a copy of the selected experts, pair order */
    public int[] experts() {
        return experts.clone();
    }

    /**
     * The backward pass of the weights with the selection held constant (as autograd treats top-K): adds dL/dlogits
     * to {@code dz [T·E]} given {@code dWeights [T·K]} = dL/dg per pair. With renormalisation g_k = c·s_k / Σ_j s_j
     * (c the scaling factor), so dL/ds_k = (c·dg_k − Σ_j ĝ_j·c·dg_j) / Σ_j s_j with ĝ = g / c; without it
     * dL/ds_k = c·dg_k; then through the score function.
     */
    public void backward(double[] dWeights, double[] dz) {
        int topK = rule.topK();
        double c = rule.scalingFactor();
        double[] dScores = new double[numExperts];
        for (int t = 0; t < tokens(); t++) {
            int at = t * numExperts;
            int s = t * topK;
            java.util.Arrays.fill(dScores, 0);
            double sumSelected = 0;
            double gDotDg = 0;
            for (int k = 0; k < topK; k++) {
                sumSelected += scores[at + experts[s + k]];
                gDotDg += unscaled(weights[s + k], c) * scaled(dWeights[s + k], c);
            }
            for (int k = 0; k < topK; k++) {
                dScores[experts[s + k]] = rule.normalizeTopK()
                        ? (scaled(dWeights[s + k], c) - gDotDg) / sumSelected     // g_k = s_k / Σ_j s_j
                        : scaled(dWeights[s + k], c);
            }
            rule.scores().backward(scores, dScores, at, numExperts, dz);
        }
    }

    private static double scaled(double dg, double c) {
        return c == 1.0 ? dg : c * dg;
    }

    private static double unscaled(double g, double c) {
        return c == 1.0 ? g : g / c;
    }
}
