package org.sparkmoe.calib;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

import java.util.Arrays;

/**
 * What expert pruning ranks the experts of one MoE layer by, as an exact mergeable accumulator. For expert e, over
 * the tokens t routed to it (e among the router's top-K of t), with y_e(t) [D] the expert's output for t (before the
 * routing weight; gpt-oss: with its down bias) and g_e(t) the routing weight the model multiplies it by (after top-K
 * renormalisation and {@code routed_scaling_factor}, where the family applies them; gpt-oss: the softmax over its K
 * logits):
 * <ul>
 * <li>{@code routed[e]}: how many tokens that is;</li>
 * <li>{@code reapSum[e]} = Σ_t g_e(t)·‖y_e(t)‖₂, so that REAP's saliency is reapSum[e] / routed[e] (Lasby et al.,
 *     "REAP the Experts", ICLR 2026);</li>
 * <li>{@code eanSum[e]} = Σ_t ‖y_e(t)‖₂, the expert activation norm (EAN) REAP compares with.</li>
 * </ul>
 * Norms are taken in float64 of the outputs as the model computes them (float32 for a float32 model); every term is
 * added exactly ({@link ExactSums}), so any split of the tokens gives the same bits.
 */
public final class ExpertSaliencyStats implements java.io.Serializable {
    private final int experts;
    private final long[] routed;        // [E]
    private final ExactSums reapSum;    // [E]
    private final ExactSums eanSum;     // [E]

    public ExpertSaliencyStats(int experts) {
        this.experts = experts;
        this.routed = new long[experts];
        this.reapSum = new ExactSums(experts);
        this.eanSum = new ExactSums(experts);
    }

    /**
     * Adds the tokens of one forward of the block.
     *
     * @param rows the block's routed rows (their routing and expert outputs ys, as the forward computed them)
     */
    public void add(FullExperts.RoutedRows rows) {
        Routes routes = rows.routes();
        if (routes.numExperts() != experts) {
            throw new IllegalArgumentException("expected a routing over " + experts + " experts, got "
                    + routes.numExperts());
        }
        RoutingPlan plan = routes.plan;
        if (plan.rows() == 0) {
            return;
        }
        int hidden = (int) rows.ys().size(1);
        NativeElements ys = NativeElements.of(rows.ys());                       // [N, D], read one row at a time
        double[] y = new double[hidden];
        float[] scratch = new float[hidden];
        for (int e = 0; e < experts; e++) {
            for (int row = plan.offsets[e]; row < plan.offsets[e + 1]; row++) {
                ys.read((long) row * hidden, y, hidden, scratch);
                double sq = 0;
                for (int d = 0; d < hidden; d++) {
                    sq += y[d] * y[d];
                }
                double norm = Math.sqrt(sq);                                     // ‖y_e(t)‖₂
                eanSum.add(e, norm);
                reapSum.add(e, routes.weightOfPair(plan.perm[row]) * norm);     // g_e(t)·‖y_e(t)‖₂
            }
            routed[e] += plan.tokensOf(e);
        }
    }

    /** this += other (exact). */
    public ExpertSaliencyStats merge(ExpertSaliencyStats other) {
        if (other.experts != experts) {
            throw new IllegalArgumentException("merging saliency of " + other.experts + " experts into " + experts);
        }
        for (int e = 0; e < experts; e++) {
            routed[e] += other.routed[e];
        }
        reapSum.merge(other.reapSum);
        eanSum.merge(other.eanSum);
        return this;
    }

    public int experts() {
        return experts;
    }

    /** [E] tokens routed to each expert. */
    public long[] routed() {
        return routed.clone();
    }

    /** [E] REAP saliency: the mean of g·‖y‖ over each expert's routed tokens (0 for an expert that saw none). */
    public double[] reap() {
        double[] out = new double[experts];
        for (int e = 0; e < experts; e++) {
            out[e] = routed[e] == 0 ? 0 : reapSum.get(e) / routed[e];
        }
        return out;
    }

    /** [E] expert activation norm: Σ ‖y‖ over each expert's routed tokens. */
    public double[] ean() {
        return eanSum.toArray();
    }

    public boolean sameAs(ExpertSaliencyStats other) {
        return experts == other.experts && Arrays.equals(routed, other.routed) && reapSum.sameAs(other.reapSum)
                && eanSum.sameAs(other.eanSum);
    }
}
