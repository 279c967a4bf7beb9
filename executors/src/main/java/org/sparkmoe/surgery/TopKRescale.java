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
