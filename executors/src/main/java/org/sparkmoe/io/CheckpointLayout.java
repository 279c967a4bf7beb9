package org.sparkmoe.io;

/**
 * Hugging Face key names of a decoder checkpoint, per model type: Mixtral keeps its experts under
 * {@code block_sparse_moe} with w1/w3/w2; Qwen2-MoE, Qwen3-MoE and OLMoE under {@code mlp} with
 * gate_proj/up_proj/down_proj (Qwen2-MoE plus a gated shared expert, GLM-4.5 plus ungated shared experts and a
 * score-correction bias beside the router); Mistral and Qwen3 have a dense {@code mlp}.
 * gpt-oss keeps its router under {@code mlp.router} (weight and bias) and stores its experts fused only
 * ({@link FusedExperts} shows them under the per-expert gate_proj/up_proj/down_proj names, with biases).
 */
public final class CheckpointLayout {
    /** The three expert projections, in the order gate (w1), up (w3), down (w2). */
    public enum Projection { GATE, UP, DOWN }

    private final ModelConfig.ModelType type;

    public CheckpointLayout(ModelConfig.ModelType type) {
        this.type = type;
    }

    public static String embedTokens() {
        return "model.embed_tokens.weight";
    }

    public static String finalNorm() {
        return "model.norm.weight";
    }

    public static String lmHead() {
        return "lm_head.weight";
    }

    public static String layer(int layer) {
        return "model.layers." + layer + ".";
    }

    public static String inputNorm(int layer) {
        return layer(layer) + "input_layernorm.weight";
    }

    public static String postAttentionNorm(int layer) {
        return layer(layer) + "post_attention_layernorm.weight";
    }

    /** @param proj one of q, k, v, o */
    public static String attention(int layer, char proj, String suffix) {
        return layer(layer) + "self_attn." + proj + "_proj." + suffix;
    }

    /**
     * A module of DeepSeek's latent attention: {@code self_attn.<module>.<suffix>}.
     *
     * @param module q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa, kv_a_layernorm or kv_b_proj
     */
    public static String attention(int layer, String module, String suffix) {
        return layer(layer) + "self_attn." + module + "." + suffix;
    }

    /** The q/k RMSNorm weight of Qwen3 and OLMoE: {@code self_attn.q_norm.weight}. @param proj q or k */
    public static String attentionNorm(int layer, char proj) {
        return layer(layer) + "self_attn." + proj + "_norm.weight";
    }

    /** The MoE block's module path with a trailing dot: {@code model.layers.L.block_sparse_moe.} or {@code model.layers.L.mlp.}. */
    public String moePrefix(int layer) {
        return layer(layer) + (type == ModelConfig.ModelType.MIXTRAL ? "block_sparse_moe." : "mlp.");
    }

    public String routerGate(int layer) {
        return moePrefix(layer) + (type == ModelConfig.ModelType.GPT_OSS ? "router.weight" : "gate.weight");
    }

    /** gpt-oss's router bias {@code mlp.router.bias} [E]. */
    public String routerBias(int layer) {
        return moePrefix(layer) + "router.bias";
    }

    /** gpt-oss's per-head attention sink logits {@code self_attn.sinks} [H]. */
    public static String attentionSinks(int layer) {
        return layer(layer) + "self_attn.sinks";
    }

    /** An expert projection's bias (gpt-oss, seen per expert through {@link FusedExperts}): [I] gate/up, [D] down. */
    public String expertBias(int layer, int expert, Projection p) {
        return expertModule(layer, expert, p) + ".bias";
    }

    /** Module path of one expert's projection without ".weight", as PEFT addresses it. */
    public String expertModule(int layer, int expert, Projection p) {
        return moePrefix(layer) + "experts." + expert + "." + projectionName(p);
    }

    public String expert(int layer, int expert, Projection p) {
        return expertModule(layer, expert, p) + ".weight";
    }

    /**
     * The shared base of an MoE layer of low-rank experts, written by {@code surgery lowrank}:
     * {@code <moe prefix>shared_base.<proj>.weight}, Hugging Face Linear layout [out, in].
     */
    public String sharedBase(int layer, Projection p) {
        return moePrefix(layer) + "shared_base." + projectionName(p) + ".weight";
    }

    /** The stacked LoRA expert shrinks of a low-rank-expert layer, {@code <moe prefix>experts.<proj>.lora_A} [E, R, in]. */
    public String stackedLoraA(int layer, Projection p) {
        return moePrefix(layer) + "experts." + projectionName(p) + ".lora_A";
    }

    /** The stacked LoRA expert expands of a low-rank-expert layer, {@code <moe prefix>experts.<proj>.lora_B} [E, out, R]. */
    public String stackedLoraB(int layer, Projection p) {
        return moePrefix(layer) + "experts." + projectionName(p) + ".lora_B";
    }

    /** The factors of a CP-form expert projection ({@code surgery lowrank --form cp}), by their key suffixes. */
    public enum CpFactor {
        /** U_N [E, R]: expert e's row scales the rank components. */
        EXPERTS("cp_n"),
        /** U_I [in, R]. */
        IN("cp_in"),
        /** U_O [out, R]. */
        OUT("cp_out");

        public final String suffix;

        CpFactor(String suffix) {
            this.suffix = suffix;
        }
    }

    /**
     * A factor of a CP-form expert projection: {@code <moe prefix>experts.<proj>.cp_n} [E, R], {@code .cp_in}
     * [in, R], {@code .cp_out} [out, R], so that expert e's [out, in] weight is U_O·diag(U_N[e])·U_Iᵀ.
     */
    public String cpFactor(int layer, Projection p, CpFactor f) {
        return moePrefix(layer) + "experts." + projectionName(p) + "." + f.suffix;
    }

    /** The cores of a TR-form expert projection ({@code surgery lowrank --form tr}), by their key suffixes. */
    public enum TrCore {
        /** G_N [r1, E, r2]: expert e's slice closes the ring. */
        EXPERTS("tr_n"),
        /** G_I [r2, in, r3]. */
        IN("tr_in"),
        /** G_O [r3, out, r1]. */
        OUT("tr_out");

        public final String suffix;

        TrCore(String suffix) {
            this.suffix = suffix;
        }
    }

    /**
     * A core of a TR-form expert projection: {@code <moe prefix>experts.<proj>.tr_n} [r1, E, r2], {@code .tr_in}
     * [r2, in, r3], {@code .tr_out} [r3, out, r1], so that expert e's weight is
     * W_e[o, i] = trace(G_N[:, e, :]·G_I[:, i, :]·G_O[:, o, :]).
     */
    public String trCore(int layer, Projection p, TrCore c) {
        return moePrefix(layer) + "experts." + projectionName(p) + "." + c.suffix;
    }

    /** The projection's module name: w1/w3/w2 for Mixtral, gate_proj/up_proj/down_proj otherwise. */
    public String projectionName(Projection p) {
        if (type == ModelConfig.ModelType.MIXTRAL) {
            return switch (p) {
                case GATE -> "w1";
                case UP -> "w3";
                case DOWN -> "w2";
            };
        }
        return denseName(p);
    }

    /** A dense layer's MLP module path with a trailing dot: {@code model.layers.L.mlp.}. */
    public static String denseMlpPrefix(int layer) {
        return layer(layer) + "mlp.";
    }

    public static String denseMlp(int layer, Projection p) {
        return denseMlpPrefix(layer) + denseName(p) + ".weight";
    }

    /** The shared expert's projection: Qwen2-MoE's {@code mlp.shared_expert.}, GLM-4.5's {@code mlp.shared_experts.}. */
    public String sharedExpert(int layer, Projection p) {
        return sharedExpertModule(layer, p) + ".weight";
    }

    /** Module path of the shared expert's projection without ".weight", as PEFT addresses it. */
    public String sharedExpertModule(int layer, Projection p) {
        return layer(layer) + "mlp." + sharedExpertName() + "." + denseName(p);
    }

    /** The shared expert's module name within a layer's mlp: Qwen2-MoE's {@code shared_expert}, else {@code shared_experts}. */
    public String sharedExpertName() {
        return type == ModelConfig.ModelType.QWEN2_MOE ? "shared_expert" : "shared_experts";
    }

    /** The selection-only bias of a sigmoid router, {@code mlp.gate.e_score_correction_bias} [E]. */
    public String scoreCorrectionBias(int layer) {
        return moePrefix(layer) + "gate.e_score_correction_bias";
    }

    public static String sharedExpertGate(int layer) {
        return layer(layer) + "mlp.shared_expert_gate.weight";
    }

    private static String denseName(Projection p) {
        return switch (p) {
            case GATE -> "gate_proj";
            case UP -> "up_proj";
            case DOWN -> "down_proj";
        };
    }
}
