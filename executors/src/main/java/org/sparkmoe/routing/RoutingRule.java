package org.sparkmoe.routing;

import java.io.Serializable;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.RoutingConfig;

/**
 * What a router does with its logits, per token: scores by {@link ScoreFunction}; optionally a group-limited
 * pre-selection (the E experts in {@code groups} equal groups, keep the {@code topGroups} best groups, ranked by
 * {@link GroupRank}); the top-K experts of the (correction-biased, when the router has a bias for selection)
 * scores; their weights are the uncorrected scores, renormalised to sum 1 when {@code normalizeTopK}, times
 * {@code scalingFactor}.
 *
 * @param topK          K experts per token
 * @param scores        softmax or sigmoid
 * @param normalizeTopK whether the K weights are divided by their sum (Mixtral always; {@code norm_topk_prob})
 * @param groups        {@code n_group}; 1: no group-limited selection
 * @param topGroups     {@code topk_group}: groups kept; equals {@code groups} without group-limited selection
 * @param groupRank     how groups are ranked
 * @param scalingFactor {@code routed_scaling_factor}; 1 leaves the weights as they are
 */
public record RoutingRule(int topK, ScoreFunction scores, boolean normalizeTopK, int groups, int topGroups,
                          GroupRank groupRank, double scalingFactor) implements Serializable {

    /** How group-limited selection ranks a group of experts. */
    public enum GroupRank {
        /** The largest score in the group (DeepSeek-V2's {@code group_limited_greedy}). */
        MAX,
        /** The sum of the group's two largest scores (DeepSeek-V3, GLM-4.5). */
        TOP2_SUM
    }

    public RoutingRule {
        if (topK < 1) {
            throw new IllegalArgumentException("top-k must be at least 1, got " + topK);
        }
        if (groups < 1 || topGroups < 1 || topGroups > groups) {
            throw new IllegalArgumentException("expert groups must satisfy 1 ≤ topk_group ≤ n_group, got n_group "
                    + groups + ", topk_group " + topGroups);
        }
        if (!(scalingFactor > 0) || Double.isInfinite(scalingFactor)) {
            throw new IllegalArgumentException("routed scaling factor must be positive and finite, got "
                    + scalingFactor);
        }
    }

    /**
     * The model's own rule from config.json: K = num_experts_per_tok, norm_topk_prob, and the router fields
     * ({@link RoutingConfig}: scores, groups ranked by max or top-2 sum, routed_scaling_factor).
     */
    public static RoutingRule of(ModelConfig c) {
        RoutingConfig r = c.routing;
        boolean grouped = r.groupLimited();
        return new RoutingRule(c.num_experts_per_tok,
                r.scoring_func().equals("sigmoid") ? ScoreFunction.SIGMOID : ScoreFunction.SOFTMAX,
                c.norm_topk_prob, grouped ? r.n_group() : 1, grouped ? r.topk_group() : 1,
                r.groupRankTop2Sum() ? GroupRank.TOP2_SUM : GroupRank.MAX, r.routed_scaling_factor());
    }

    /**
     * Softmax over E, top-K, the K weights renormalised when {@code normalizeTopK} (Mixtral: always).
     *
     * <p>With renormalisation this is also gpt-oss's rule, top-K of the raw logits z then a softmax over those K:
     * softmax is monotone, so the top-K of the scores are the top-K of the logits, and for a selected k
     * {@code p_k / Σ_sel p_j = (e^{z_k}/Z) / (Σ_sel e^{z_j}/Z) = e^{z_k} / Σ_sel e^{z_j}}, the softmax over the K.
     * The gradients agree too (the same function of the logits, the selection held constant).
     */
    public static RoutingRule softmaxTopK(int topK, boolean normalizeTopK) {
        return new RoutingRule(topK, ScoreFunction.SOFTMAX, normalizeTopK, 1, 1, GroupRank.MAX, 1.0);
    }

    public RoutingRule withTopK(int k) {
        return new RoutingRule(k, scores, normalizeTopK, groups, topGroups, groupRank, scalingFactor);
    }

    /** Whether selection first keeps the best {@code topGroups} of {@code groups} groups. */
    public boolean groupLimited() {
        return topGroups < groups;
    }
}
