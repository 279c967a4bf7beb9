package org.sparkmoe.surgery;

/**
 * The down-projection scale α for changing top-K to top-M. A Mixtral-style MoE output is y = Σ_{i≤K} ĝᵢ·yᵢ with
 * the K selected weights renormalised to sum 1. Taking the expert outputs yᵢ as uncorrelated with equal
 * E‖yᵢ‖² = σ², E‖y‖² = σ²·E[Σ ĝᵢ²]; scaling every w2 (hence every yᵢ) by α keeps E‖y‖² when
 * <pre>
 *   α = √( E[Σ_{top-K} ĝ²] / E[Σ_{top-M} ĝ²] ).
 * </pre>
 * {@code uniform} assumes equal weights ĝᵢ = 1/K, so Σ ĝ² = 1/K and α = √(M/K); {@code measured} takes both
 * expectations from calibrate's {@code topm_sq_sum}; {@code none} is α = 1.
 *
 * <p>Sigmoid routers (GLM-4.5): the weights are gᵢ = c · sᵢ / Σ_{j∈S} sⱼ with sᵢ = σ(zᵢ) the uncorrected scores of
 * the selected set S, c = {@code routed_scaling_factor}; S is chosen by the corrected scores sᵢ + bᵢ within the
 * kept groups. The same argument gives E‖y‖² = c²·σ²·E[Σ_{i∈S} ĝᵢ²] with ĝᵢ = sᵢ / Σ_{j∈S} sⱼ, so
 * <pre>
 *   α = √( c²·E[Σ_{S_K} ĝ²] / (c²·E[Σ_{S_M} ĝ²]) ) = √( E[Σ_{S_K} ĝ²] / E[Σ_{S_M} ĝ²] ):
 * </pre>
 * c cancels (it multiplies both), the ĝ are the renormalised sigmoid (not softmax) scores, and S_M is the first M of
 * the router's own order — by corrected score inside the kept groups, which do not depend on K — so S_M ⊂ S_K for
 * M &lt; K. Calibration records exactly these sums ({@code LayerRouterStats}, from {@code Router.rank}); M cannot
 * exceed the experts of the kept groups. Without renormalisation (norm_topk_prob false) Σ ĝ² is no longer
 * scale-free and only {@code none} is offered. The shared expert's output is not rescaled: α keeps the routed part's
 * norm. TopKRescaleSigmoidTest checks α against measured output norms of such a block.
 *
 * <p>gpt-oss weighs its experts by a softmax over the selected logits only, so its weights are not a truncation of
 * fixed probabilities: after the surgery the M kept experts share all the weight again,
 * ĝᵢ⁽ᴹ⁾ = e^{zᵢ} / Σ_{j≤M} e^{z_(j)}. That is the renormalised softmax, ĝᵢ⁽ᴹ⁾ = pᵢ / Σ_{j≤M} p_(j) with p the softmax
 * over all E (the partition function cancels), which is exactly what {@code topm_sq_sum} accumulates from the router
 * logits (with the router bias), so α keeps the formula above with both expectations over these re-softmaxed
 * weights. What changes is what α must scale: a gpt-oss expert output is yᵢ = W2ᵢ·actᵢ + b2ᵢ, its down bias inside
 * the routing weight, so the surgery scales b2 with W2 (scaling W2 alone would leave the bias part of every yᵢ, and
 * of ‖y‖², unscaled). {@code TopKRescaleGptOssTest} checks the identity on experts whose outputs are orthogonal with
 * equal norms (the derivation's assumption made exact).
 */
public final class TopKRescale {
    public enum Method { NONE, UNIFORM, MEASURED }

    private TopKRescale() {
    }

    /** √(M/K). */
    public static double uniform(int oldK, int newM) {
        return Math.sqrt((double) newM / oldK);
    }

    /** √(E[Σ_{top-K} ĝ²] / E[Σ_{top-M} ĝ²]) from one layer's statistics. */
    public static double measured(RoutingStats.Layer layer, int oldK, int newM) {
        double top = layer.meanTopmSq(newM);
        if (!(top > 0)) {
            throw new IllegalArgumentException("router statistics have topm_sq_sum[" + (newM - 1) + "] = "
                    + layer.topmSqSum()[newM - 1] + ", expected > 0");
        }
        return Math.sqrt(layer.meanTopmSq(oldK) / top);
    }
}
