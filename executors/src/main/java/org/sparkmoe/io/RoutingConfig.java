package org.sparkmoe.io;

/**
 * The router fields of config.json, by their Hugging Face (DeepSeek) names: {@code scoring_func} softmax or sigmoid;
 * {@code topk_method} greedy (plain top-K), group_limited_greedy (groups ranked by their max score) or noaux_tc
 * (groups ranked by the sum of their two best corrected scores, a selection-only {@code e_score_correction_bias} per
 * router); {@code n_group} groups of E/n_group experts of which the best {@code topk_group} are kept;
 * {@code routed_scaling_factor} multiplies the K weights after renormalisation. GLM-4.5 has no scoring_func or
 * topk_method field and is sigmoid / noaux_tc.
 */
public record RoutingConfig(String scoring_func, String topk_method, int n_group, int topk_group,
                            double routed_scaling_factor) {

    /** Softmax top-K without groups, scaling or bias (Mixtral, Qwen2/3-MoE, OLMoE). */
    public static final RoutingConfig SOFTMAX = new RoutingConfig("softmax", "greedy", 1, 1, 1.0);

    public RoutingConfig {
        if (!scoring_func.equals("softmax") && !scoring_func.equals("sigmoid")) {
            throw new IllegalArgumentException("scoring_func must be softmax or sigmoid, got \"" + scoring_func + "\"");
        }
        if (!topk_method.equals("greedy") && !topk_method.equals("group_limited_greedy")
                && !topk_method.equals("noaux_tc")) {
            throw new IllegalArgumentException("topk_method must be greedy, group_limited_greedy or noaux_tc, got \""
                    + topk_method + "\"");
        }
        if (n_group < 1 || topk_group < 1 || topk_group > n_group) {
            throw new IllegalArgumentException("expert groups must satisfy 1 ≤ topk_group ≤ n_group, got n_group "
                    + n_group + ", topk_group " + topk_group);
        }
        if (!(routed_scaling_factor > 0) || Double.isInfinite(routed_scaling_factor)) {
            throw new IllegalArgumentException("routed_scaling_factor must be positive and finite, got "
                    + routed_scaling_factor);
        }
    }

    /** Whether each router holds {@code e_score_correction_bias} [E] (noaux_tc). */
    public boolean scoreCorrectionBias() {
        return topk_method.equals("noaux_tc");
    }

    /** Whether groups are ranked by their two best scores (noaux_tc) rather than their best one. */
    public boolean groupRankTop2Sum() {
        return topk_method.equals("noaux_tc");
    }

    /** Whether selection is group-limited: greedy ignores n_group, as DeepSeek's gate does. */
    public boolean groupLimited() {
        return !topk_method.equals("greedy") && topk_group < n_group;
    }

    /** The same fields with another number of groups (expert surgery re-grouping E' experts). */
    public RoutingConfig withGroups(int groups, int topGroups) {
        return new RoutingConfig(scoring_func, topk_method, groups, topGroups, routed_scaling_factor);
    }
}
