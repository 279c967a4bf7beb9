package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.io.ModelConfig;

import java.util.List;

/**
 * What a surgery that changes the number of experts per MoE layer (E → E') must keep and write, shared by
 * {@link ExpertReduceSurgery} and {@link ExpertPruneSurgery}. With group-limited selection (noaux_tc, or DeepSeek-V2's
 * group_limited_greedy, {@code topk_group} < {@code n_group}) every group keeps E'/n_group experts: E' must be a
 * multiple of n_group with at least two experts per group for noaux_tc (groups ranked by their two best scores; one
 * for group_limited_greedy, ranked by their best), and the {@code topk_group} kept groups must hold min(K, E')
 * experts. Without group-limited selection the groups choose nothing and the config gets
 * {@code n_group} = {@code topk_group} = 1 (the same selection); noaux_tc still ranks its one group by two scores, so
 * E' ≥ 2 there.
 */
final class ExpertCount {
    private ExpertCount() {
    }

    /** n_group the E' experts keep (1 without group-limited selection); refuses an E' that breaks the groups. */
    static int groups(ModelConfig model, int newExperts) {
        int nGroup = model.routing.groupLimited() ? model.routing.n_group() : 1;
        int minPerGroup = model.routing.groupRankTop2Sum() ? 2 : 1; // groups ranked by their two best scores, or best
        if (nGroup > 1) {
            int perGroup = newExperts / nGroup;
            int topK = Math.min(model.num_experts_per_tok, newExperts);
            if (newExperts % nGroup != 0 || perGroup < minPerGroup
                    || (long) perGroup * model.routing.topk_group() < topK) {
                throw new IllegalArgumentException("--experts " + newExperts + " does not keep the expert groups: it "
                        + "must be a multiple of n_group " + nGroup + " with at least " + minPerGroup + " expert"
                        + (minPerGroup > 1 ? "s" : "") + " per group, and topk_group " + model.routing.topk_group()
                        + " groups must hold num_experts_per_tok " + topK);
            }
        } else if (newExperts < minPerGroup) {
            throw new IllegalArgumentException("--experts " + newExperts + ": topk_method noaux_tc ranks expert groups "
                    + "by their two best scores, so at least 2 experts must remain");
        }
        return nGroup;
    }

    /** Whether the config's groups choose nothing, so the new config is written with n_group = topk_group = 1. */
    static boolean ungroup(ModelConfig model) {
        return !model.routing.groupLimited() && model.routing.n_group() != 1;
    }

    /**
     * The original config.json with E' experts under the name the config uses: num_local_experts (Mixtral, and
     * Qwen3-MoE as transformers 5 writes it), num_experts (Qwen2-MoE, OLMoE, older Qwen3-MoE configs) or
     * n_routed_experts (GLM, DeepSeek); {@code num_experts_per_tok} = min(K, E'); ungrouped as {@link #ungroup} says.
     */
    static ObjectNode config(ModelConfig original, int newExperts) {
        ObjectNode json = original.jsonCopy();
        boolean written = false;
        for (String field : List.of("num_local_experts", "num_experts", "n_routed_experts")) {
            if (json.has(field) && !json.get(field).isNull()) {
                json.put(field, newExperts);
                written = true;
            }
        }
        if (!written) {
            json.put(original.modelType == ModelConfig.ModelType.MIXTRAL ? "num_local_experts"
                    : original.modelType == ModelConfig.ModelType.GLM4_MOE ? "n_routed_experts" : "num_experts",
                    newExperts);
        }
        json.put("num_experts_per_tok", Math.min(original.num_experts_per_tok, newExperts));
        if (ungroup(original)) {
            json.put("n_group", 1);
            json.put("topk_group", 1);
        }
        return json;
    }

    /**
     * The fewest unmasked experts the {@code topkGroup} groups a router chooses can hold, when group g holds
     * {@code counts[g]} unmasked experts and its masked ones carry a selection bias far below every score: a group is
     * ranked by the sum of its {@code ranked} best corrected scores (2 for noaux_tc), so every group with at least
     * {@code ranked} unmasked experts outranks every group with fewer, and among those fewer, more outrank less. Within
     * the top tier any groups may win, so the worst case takes its smallest counts first.
     */
    static int reach(int[] counts, int topkGroup, int ranked) {
        return java.util.Arrays.stream(counts).boxed()
                .sorted((a, b) -> Math.min(a, ranked) != Math.min(b, ranked)
                        ? Integer.compare(Math.min(b, ranked), Math.min(a, ranked)) : Integer.compare(a, b))
                .limit(topkGroup).mapToInt(Integer::intValue).sum();
    }
}
