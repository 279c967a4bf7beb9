package org.sparkmoe.io;

import java.util.List;

/**
 * How a written checkpoint stores its MoE experts: one tensor per expert and projection (the classic layout, what
 * transformers' {@code save_pretrained} writes) or transformers 5's fused {@code gate_up_proj} / {@code down_proj}
 * per layer ({@link FusedExperts}). Writers keep the input's layout unless told otherwise ({@code --layout}).
 */
public enum ExpertLayout {
    PER_EXPERT("per-expert"), FUSED("fused");

    private final String option;

    ExpertLayout(String option) {
        this.option = option;
    }

    /** Parses a {@code --layout} value: per-expert or fused. */
    public static ExpertLayout parse(String value) {
        return parse(value, "--layout");
    }

    /** Parses the value of {@code option} (--layout, --adapter-format): per-expert or fused. */
    public static ExpertLayout parse(String value, String option) {
        for (ExpertLayout l : values()) {
            if (l.option.equals(value)) {
                return l;
            }
        }
        throw new IllegalArgumentException(option + " must be per-expert or fused, got '" + value + "'");
    }

    /** The layout {@code stored} uses: FUSED when any MoE layer of {@code config} is stored fused. */
    public static ExpertLayout of(TensorSource stored, ModelConfig config) {
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        for (int l = 0; l < config.num_hidden_layers && config.num_experts > 0 && !config.hasLowRankExperts(); l++) {
            if (config.isMoeLayer(l) && FusedExperts.isFused(stored, layout, l)) {
                return FUSED;
            }
        }
        return PER_EXPERT;
    }

    /**
     * What to write.
     *
     * @param tensors answers every name in {@code names}
     * @param names   in write order
     */
    public record Written(TensorSource tensors, List<String> names) {
    }

    /**
     * @param perExpert tensors under per-expert names (a {@link FusedExperts} view of a fused input is fine)
     * @param names     the per-expert names to write, in order
     * @param out       the written config; a dense or low-rank model has no experts to fuse and is written as given
     */
    public Written apply(TensorSource perExpert, List<String> names, ModelConfig out) {
        if (out.num_experts == 0 || out.hasLowRankExperts()) {
            return new Written(perExpert, names);
        }
        if (this == PER_EXPERT && out.clamped_experts) {
            throw new IllegalArgumentException("--layout per-expert: gpt_oss has no per-expert layout in transformers "
                    + "(its experts are stored fused only); leave --layout out");
        }
        if (this == PER_EXPERT) {
            return new Written(perExpert, names);
        }
        FusingTensors fused = FusingTensors.of(perExpert, out);
        return new Written(fused, fused.names(names));
    }

    @Override
    public String toString() {
        return option;
    }
}
