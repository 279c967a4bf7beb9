package org.sparkmoe.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.util.HashSet;
import java.util.Iterator;
import java.util.Set;

/**
 * A Hugging Face {@code config.json} for a decoder-only (MoE) causal LM. Fields keep their Hugging Face
 * names; derived values (head_dim when null, the rope_theta location) are resolved here once.
 * Supported model types: {@code mixtral}, {@code qwen2_moe}, {@code qwen3_moe}, {@code olmoe}, {@code glm4_moe},
 * {@code gpt_oss}, {@code deepseek_v2}, {@code deepseek_v3} (Kimi-K2 too), and the dense {@code mistral} and
 * {@code qwen3} that expert merging produces. Defaults follow transformers 5.17's config classes.
 */
public final class ModelConfig {
    public enum ModelType { MIXTRAL, QWEN2_MOE, QWEN3_MOE, OLMOE, GLM4_MOE, GPT_OSS, DEEPSEEK_V2, DEEPSEEK_V3, MISTRAL,
        QWEN3 }

    /**
     * Where an RMSNorm acts on the q and k projections: not at all; per head over head_dim after the reshape
     * (Qwen3, weights [hd]); or over the whole projection before the reshape (OLMoE, weights [H·hd] and [KVH·hd]).
     */
    public enum QkNorm { NONE, PER_HEAD, WHOLE }

    public final ModelType modelType;
    public final int vocab_size;
    public final int hidden_size;
    /** Dense MLP width: Mixtral and OLMoE experts, Qwen2/3-MoE dense (mlp_only) layers, Mistral, Qwen3. */
    public final int intermediate_size;
    public final int num_hidden_layers;
    public final int num_attention_heads;
    public final int num_key_value_heads;
    /** Per-head width of q/k/v; for DeepSeek (as transformers sets it) qk_rope_head_dim, the rotated width. */
    public final int head_dim;
    /**
     * {@code quantization_config.weight_block_size} [bo, bi] of an FP8 (e4m3) block-quantized checkpoint (DeepSeek-V3,
     * Kimi-K2): its linear weights may be F8_E4M3 with a float32 {@code <name>_scale_inv} per block; null = none.
     */
    public final int[] weight_block_size;
    /** DeepSeek's latent attention sizes; null for the grouped-query types. */
    public final MlaConfig mla;
    public final double rms_norm_eps;
    /** Longest sequence RoPE tables are built for. */
    public final int max_position_embeddings;
    public final double rope_theta;
    /**
     * The share of each head RoPE rotates (its leading {@code int(head_dim · factor)} entries): GLM-4.5 reads it
     * top-level or under rope_parameters, default 0.5 (Glm4MoeConfig); 1 for the other types.
     */
    public final double partial_rotary_factor;
    /** YaRN rope scaling ({@code rope_parameters} or {@code rope_scaling} of type yarn); null = plain RoPE. */
    public final YarnScaling rope_scaling;
    /**
     * null = full causal attention; else the window of the layers {@link #slidingWindow(int)} names (every layer, or
     * gpt-oss's sliding_attention layers).
     */
    public final Integer sliding_window;
    /**
     * gpt-oss: "sliding_attention" or "full_attention" per layer (GptOssConfig's default alternates, starting
     * sliding); null for the other types, whose sliding_window applies to every layer.
     */
    public final java.util.List<String> layer_types;
    /** gpt-oss: a learned sink logit per head ({@code self_attn.sinks} [H]) joins every attention softmax. */
    public final boolean attention_sinks;
    /** gpt-oss's clamped expert activation (swiglu_limit 7, alpha 1.702) with biases on every expert projection. */
    public final boolean clamped_experts;
    public final boolean tie_word_embeddings;
    /** Bias on q/k/v projections (Qwen2-MoE's qkv_bias; true with attention_bias). */
    public final boolean qkv_bias;
    /** Bias on q/k/v and o projections (Qwen3-MoE, Qwen3, OLMoE); false for the others. */
    public final boolean attention_bias;
    /** The q/k RMSNorm of Qwen3 (per head) and OLMoE (whole projection). */
    public final QkNorm qkNorm;
    /** OLMoE: q, k and v are clamped to [−clip_qkv, clip_qkv] after the norms; null = no clamp. */
    public final Double clip_qkv;
    /** E: num_local_experts (Mixtral) or num_experts (Qwen2/3-MoE, OLMoE; either name for Qwen3-MoE and OLMoE); 0 dense. */
    public final int num_experts;
    /** K. */
    public final int num_experts_per_tok;
    /** Expert width: intermediate_size (Mixtral, OLMoE) or moe_intermediate_size (Qwen2/3-MoE). */
    public final int expert_intermediate_size;
    public final boolean norm_topk_prob;
    /**
     * 0 = no shared expert. Qwen2-MoE's field of that name (one expert, gated by sigmoid(x·Wsgᵀ)); for the
     * sigmoid-routed families {@code n_shared_experts · moe_intermediate_size} (ungated, added to the routed output).
     */
    public final int shared_expert_intermediate_size;
    /** Sigmoid-routed families: how many experts the shared MLP stands for (its width in moe_intermediate_size units). */
    public final int n_shared_experts;
    /** The first k layers are dense (MLP of intermediate_size); held as {@link #mlp_only_layers} = {0 .. k−1}. */
    public final int first_k_dense_replace;
    /** How the router scores and selects: softmax top-K for most types, sigmoid with groups and a bias for others. */
    public final RoutingConfig routing;
    public final int decoder_sparse_step;
    public final Set<Integer> mlp_only_layers;
    public final double router_aux_loss_coef;
    public final double router_jitter_noise;
    /**
     * R of a model of low-rank experts written by {@code surgery lowrank} (config field {@code low_rank_experts_rank};
     * {@code shared_base_lora_rank}, the name versions before 0.2 wrote, is read too; mixtral, qwen3_moe, olmoe,
     * glm4_moe, deepseek_v2 and deepseek_v3, the types without a gated shared expert; GLM's and DeepSeek's shared
     * experts are kept beside the low-rank experts): every MoE layer
     * holds one shared base FFN and E stacked LoRA experts of rank R; 0 = plain experts.
     */
    public final int low_rank_experts_rank;
    /**
     * How the low-rank experts are factorised (config field {@code low_rank_experts_form}; absent: {@code svd}): the
     * shared base plus rank-R LoRA experts, the CP form of {@code surgery lowrank --form cp} (per projection
     * U_N [E, R], U_I [in, R], U_O [out, R], expert e's weight U_O·diag(U_N[e])·U_Iᵀ; no base), or the TR form of
     * {@code --form tr} (per projection cores G_N [R, E, R], G_I [R, in, R], G_O [R, out, R], expert e's weight
     * W_e[o, i] = trace(G_N[:, e, :]·G_I[:, i, :]·G_O[:, o, :]); no base). Read only when
     * {@link #low_rank_experts_rank} > 0.
     */
    public final LowRankForm low_rank_experts_form;
    /** The config.json field of {@link #low_rank_experts_form}. */
    public static final String LOW_RANK_FORM_FIELD = "low_rank_experts_form";

    /** The factorisations of {@code surgery lowrank --form}, by their config.json names. */
    public enum LowRankForm {
        /** Shared base + per-expert rank-R LoRA (truncated SVD). */
        SVD,
        /** Per projection a rank-R CP decomposition of the stacked experts [E, out, in]. */
        CP,
        /** Per projection a tensor ring of ranks (R, R, R) through the stacked experts [E, out, in]. */
        TR;

        /** The config.json and command-line name. */
        public String id() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    /** The config.json field of {@link #low_rank_experts_rank}, and the name earlier versions wrote. */
    public static final String LOW_RANK_FIELD = "low_rank_experts_rank";
    private static final String OLD_LOW_RANK_FIELD = "shared_base_lora_rank";
    /** The parsed JSON, kept so that writers can emit a config with only the changed fields edited. */
    private final ObjectNode json;

    private ModelConfig(ObjectNode json, String source) {
        this.json = json;
        Fields f = new Fields(json, source);
        String type = f.string("model_type");
        switch (type) {
            case "mixtral" -> modelType = ModelType.MIXTRAL;
            case "qwen2_moe" -> modelType = ModelType.QWEN2_MOE;
            case "qwen3_moe" -> modelType = ModelType.QWEN3_MOE;
            case "olmoe" -> modelType = ModelType.OLMOE;
            case "glm4_moe" -> modelType = ModelType.GLM4_MOE;
            case "gpt_oss" -> modelType = ModelType.GPT_OSS;
            case "deepseek_v2" -> modelType = ModelType.DEEPSEEK_V2;
            // Kimi-K2's config.json names its own type and ships DeepSeek-V3's code (trust_remote_code)
            case "deepseek_v3", "kimi_k2" -> modelType = ModelType.DEEPSEEK_V3;
            case "mistral" -> modelType = ModelType.MISTRAL;
            case "qwen3" -> modelType = ModelType.QWEN3;
            default -> throw new ModelConfigException(source + ": unsupported model_type \"" + type
                    + "\" (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, glm4_moe, gpt_oss, deepseek_v2, deepseek_v3, "
                    + "kimi_k2, mistral, qwen3)");
        }
        vocab_size = f.positiveInt("vocab_size");
        hidden_size = f.positiveInt("hidden_size");
        intermediate_size = f.positiveInt("intermediate_size");
        num_hidden_layers = f.positiveInt("num_hidden_layers");
        num_attention_heads = f.positiveInt("num_attention_heads");
        num_key_value_heads = f.has("num_key_value_heads") ? f.positiveInt("num_key_value_heads") : num_attention_heads;
        if (num_attention_heads % num_key_value_heads != 0) {
            throw new ModelConfigException(source + ": num_attention_heads " + num_attention_heads
                    + " is not a multiple of num_key_value_heads " + num_key_value_heads);
        }
        boolean deepSeek = modelType == ModelType.DEEPSEEK_V2 || modelType == ModelType.DEEPSEEK_V3;
        mla = deepSeek ? mlaConfig(f, modelType, source) : null;
        if (deepSeek) {
            head_dim = mla.qk_rope_head_dim(); // DeepseekV2Config / DeepseekV3Config: head_dim = qk_rope_head_dim
            if (num_key_value_heads != num_attention_heads) {
                throw new ModelConfigException(source + ": " + type + " needs num_key_value_heads = "
                        + "num_attention_heads (MLA expands keys per head), got " + num_key_value_heads + " vs "
                        + num_attention_heads);
            }
        } else if (f.has("head_dim")) {
            head_dim = f.positiveInt("head_dim");
        } else if (modelType == ModelType.QWEN3) {
            head_dim = 128; // Qwen3Config declares head_dim = 128 (Qwen3MoeConfig does not: hidden/heads there)
        } else {
            if (hidden_size % num_attention_heads != 0) {
                throw new ModelConfigException(source + ": head_dim is null and hidden_size " + hidden_size
                        + " is not a multiple of num_attention_heads " + num_attention_heads);
            }
            head_dim = hidden_size / num_attention_heads;
        }
        if (head_dim % 2 != 0) {
            throw new ModelConfigException(source + ": head_dim must be even for RoPE, got " + head_dim);
        }
        rms_norm_eps = f.positiveDouble("rms_norm_eps");
        max_position_embeddings = f.positiveInt("max_position_embeddings");
        rope_scaling = yarn(f, max_position_embeddings, source);
        weight_block_size = fp8BlockSize(f, modelType, source);
        rope_theta = ropeTheta(f, source);
        partial_rotary_factor = modelType == ModelType.GLM4_MOE ? partialRotaryFactor(f, source, 0.5) : 1.0;
        String act = f.has("hidden_act") ? f.string("hidden_act") : "silu";
        if (!act.equals("silu")) {
            throw new ModelConfigException(source + ": unsupported hidden_act \"" + act + "\" (supported: silu)");
        }
        tie_word_embeddings = f.bool("tie_word_embeddings", false);
        router_aux_loss_coef = f.has("router_aux_loss_coef") ? f.nonNegativeDouble("router_aux_loss_coef") : 0.0;
        router_jitter_noise = f.has("router_jitter_noise") ? f.nonNegativeDouble("router_jitter_noise") : 0.0;
        int sharedExperts = 0;
        int firstDense = 0;
        RoutingConfig routing = RoutingConfig.SOFTMAX;
        layer_types = modelType == ModelType.GPT_OSS ? layerTypes(f, num_hidden_layers) : null;
        attention_sinks = modelType == ModelType.GPT_OSS;
        clamped_experts = modelType == ModelType.GPT_OSS;
        switch (modelType) {
            case GPT_OSS -> {
                num_experts = f.has("num_local_experts") ? f.positiveInt("num_local_experts")
                        : f.positiveInt("num_experts");
                num_experts_per_tok = f.positiveInt("num_experts_per_tok");
                expert_intermediate_size = intermediate_size;
                // softmax over the top-K logits = the softmax over all E renormalised over the K (see RoutingRule)
                norm_topk_prob = true;
                shared_expert_intermediate_size = 0;
                decoder_sparse_step = 1;
                mlp_only_layers = Set.of();
                attention_bias = f.bool("attention_bias", true);
                qkv_bias = attention_bias;
                qkNorm = QkNorm.NONE;
                clip_qkv = null;
                sliding_window = f.optionalPositiveInt("sliding_window");
                if (sliding_window == null && layer_types.contains("sliding_attention")) {
                    throw new ModelConfigException(source + ": layer_types has sliding_attention layers but "
                            + "sliding_window is null");
                }
                if (f.has("swiglu_limit") && f.positiveDouble("swiglu_limit") != 7.0) {
                    // GptOssExperts fixes limit = 7.0 whatever the config says; only the MXFP4 kernels read it
                    throw new ModelConfigException(source + ": unsupported swiglu_limit " + f.raw("swiglu_limit")
                            + " (transformers' GptOssExperts uses 7.0)");
                }
                low_rank_experts_rank = lowRankRank(f);
            }
            case MIXTRAL -> {
                num_experts = f.positiveInt("num_local_experts");
                num_experts_per_tok = f.positiveInt("num_experts_per_tok");
                expert_intermediate_size = intermediate_size;
                norm_topk_prob = true;
                shared_expert_intermediate_size = 0;
                decoder_sparse_step = 1;
                mlp_only_layers = Set.of();
                qkv_bias = false;
                attention_bias = false;
                qkNorm = QkNorm.NONE;
                clip_qkv = null;
                sliding_window = f.optionalPositiveInt("sliding_window");
                low_rank_experts_rank = lowRankRank(f);
            }
            case QWEN2_MOE -> {
                num_experts = f.positiveInt("num_experts");
                num_experts_per_tok = f.positiveInt("num_experts_per_tok");
                expert_intermediate_size = f.positiveInt("moe_intermediate_size");
                norm_topk_prob = f.bool("norm_topk_prob", false);
                shared_expert_intermediate_size = f.has("shared_expert_intermediate_size")
                        ? f.nonNegativeInt("shared_expert_intermediate_size") : 0;
                decoder_sparse_step = f.has("decoder_sparse_step") ? f.positiveInt("decoder_sparse_step") : 1;
                mlp_only_layers = f.intSet("mlp_only_layers", num_hidden_layers);
                qkv_bias = f.bool("qkv_bias", true);
                attention_bias = false;
                qkNorm = QkNorm.NONE;
                clip_qkv = null;
                if (f.bool("use_sliding_window", false)) {
                    throw new ModelConfigException(source + ": unsupported use_sliding_window true for qwen2_moe");
                }
                sliding_window = null;
                low_rank_experts_rank = 0;
            }
            case QWEN3_MOE -> {
                // Qwen3MoeConfig.attribute_map: num_experts → num_local_experts, the name transformers 5 writes
                num_experts = f.has("num_experts") ? f.positiveInt("num_experts") : f.positiveInt("num_local_experts");
                num_experts_per_tok = f.positiveInt("num_experts_per_tok");
                expert_intermediate_size = f.positiveInt("moe_intermediate_size");
                norm_topk_prob = f.bool("norm_topk_prob", false);
                shared_expert_intermediate_size = 0;
                decoder_sparse_step = f.has("decoder_sparse_step") ? f.positiveInt("decoder_sparse_step") : 1;
                mlp_only_layers = f.intSet("mlp_only_layers", num_hidden_layers);
                attention_bias = f.bool("attention_bias", false);
                qkv_bias = attention_bias;
                qkNorm = QkNorm.PER_HEAD;
                clip_qkv = null;
                // transformers 5.17 (Qwen3MoeConfig.__post_init__): the window applies to every layer when
                // use_sliding_window is true; max_window_layers is not read by Qwen3-MoE's modelling code
                sliding_window = f.bool("use_sliding_window", false) ? f.positiveInt("sliding_window") : null;
                low_rank_experts_rank = lowRankRank(f);
            }
            case OLMOE -> {
                num_experts = f.has("num_experts") ? f.positiveInt("num_experts") : f.positiveInt("num_local_experts");
                num_experts_per_tok = f.positiveInt("num_experts_per_tok");
                expert_intermediate_size = intermediate_size;
                norm_topk_prob = f.bool("norm_topk_prob", false);
                shared_expert_intermediate_size = 0;
                decoder_sparse_step = 1;
                mlp_only_layers = Set.of();
                attention_bias = f.bool("attention_bias", false);
                qkv_bias = attention_bias;
                qkNorm = QkNorm.WHOLE;
                clip_qkv = f.has("clip_qkv") ? f.positiveDouble("clip_qkv") : null;
                if ((long) num_attention_heads * head_dim != hidden_size) {
                    // OlmoeAttention sizes q_norm by hidden_size and k_norm by hidden/heads·kv_heads
                    throw new ModelConfigException(source + ": olmoe needs num_attention_heads·head_dim = hidden_size "
                            + "(q_norm has hidden_size weights), got " + num_attention_heads + "·" + head_dim
                            + " vs " + hidden_size);
                }
                sliding_window = null; // OlmoeModel builds a plain causal mask whatever the config says
                low_rank_experts_rank = lowRankRank(f);
            }
            case GLM4_MOE -> {
                // Glm4MoeConfig.attribute_map: num_local_experts → n_routed_experts
                num_experts = f.has("n_routed_experts") ? f.positiveInt("n_routed_experts")
                        : f.positiveInt("num_local_experts");
                num_experts_per_tok = f.positiveInt("num_experts_per_tok");
                expert_intermediate_size = f.positiveInt("moe_intermediate_size");
                norm_topk_prob = f.bool("norm_topk_prob", true);
                sharedExperts = f.has("n_shared_experts") ? f.nonNegativeInt("n_shared_experts") : 1;
                shared_expert_intermediate_size = Math.multiplyExact(sharedExperts, expert_intermediate_size);
                decoder_sparse_step = 1;
                firstDense = f.has("first_k_dense_replace") ? f.nonNegativeInt("first_k_dense_replace") : 1;
                mlp_only_layers = firstLayers(firstDense, num_hidden_layers);
                routing = routingConfig(f, source, "sigmoid", "noaux_tc");
                // Glm4MoeAttention: q/k/v carry a bias when attention_bias, o_proj never does
                qkv_bias = f.bool("attention_bias", false);
                attention_bias = false;
                qkNorm = f.bool("use_qk_norm", false) ? QkNorm.PER_HEAD : QkNorm.NONE;
                clip_qkv = null;
                sliding_window = null; // Glm4MoeModel builds a plain causal mask
                low_rank_experts_rank = lowRankRank(f);
            }
            case DEEPSEEK_V2, DEEPSEEK_V3 -> {
                boolean v3 = modelType == ModelType.DEEPSEEK_V3;
                // DeepseekV2Config / DeepseekV3Config.attribute_map: num_experts / num_local_experts → n_routed_experts
                num_experts = f.positiveInt("n_routed_experts");
                num_experts_per_tok = f.positiveInt("num_experts_per_tok");
                expert_intermediate_size = f.positiveInt("moe_intermediate_size");
                norm_topk_prob = f.bool("norm_topk_prob", v3);
                if (!v3 && norm_topk_prob) {
                    // DeepseekV2TopkRouter never renormalises (DeepSeek's own code does): the two disagree
                    throw new ModelConfigException(source + ": deepseek_v2 with norm_topk_prob true is refused "
                            + "(transformers 5.17 ignores it, DeepSeek's code renormalises)");
                }
                sharedExperts = f.has("n_shared_experts") ? f.nonNegativeInt("n_shared_experts") : v3 ? 1 : 2;
                shared_expert_intermediate_size = Math.multiplyExact(sharedExperts, expert_intermediate_size);
                decoder_sparse_step = 1;
                firstDense = f.has("first_k_dense_replace") ? f.nonNegativeInt("first_k_dense_replace") : v3 ? 3 : 0;
                mlp_only_layers = firstLayers(firstDense, num_hidden_layers);
                if (f.has("moe_layer_freq") && f.positiveInt("moe_layer_freq") != 1) {
                    throw new ModelConfigException(source + ": unsupported moe_layer_freq " + f.raw("moe_layer_freq")
                            + " (transformers 5.17 makes every layer after first_k_dense_replace an MoE layer)");
                }
                if (f.bool("mlp_bias", false)) {
                    throw new ModelConfigException(source + ": unsupported mlp_bias true for " + type);
                }
                routing = v3 ? routingConfig(f, source, "sigmoid", "noaux_tc", 8, 4, 2.5)
                        : routingConfig(f, source, "softmax", "greedy", 1, 1, 1.0);
                // transformers' routers: V2 softmax with greedy or group_limited_greedy, V3 sigmoid noaux_tc always
                if (v3 ? !routing.scoring_func().equals("sigmoid") || !routing.topk_method().equals("noaux_tc")
                        : !routing.scoring_func().equals("softmax") || routing.topk_method().equals("noaux_tc")) {
                    throw new ModelConfigException(source + ": unsupported scoring_func \"" + routing.scoring_func()
                            + "\" with topk_method \"" + routing.topk_method() + "\" for " + type + " (supported: "
                            + (v3 ? "sigmoid with noaux_tc)" : "softmax with greedy or group_limited_greedy)"));
                }
                qkv_bias = false;
                attention_bias = f.bool("attention_bias", false); // q_a_proj, kv_a_proj_with_mqa and o_proj
                qkNorm = QkNorm.NONE;
                clip_qkv = null;
                sliding_window = null;
                low_rank_experts_rank = lowRankRank(f);
            }
            case QWEN3 -> {
                num_experts = 0;
                num_experts_per_tok = 0;
                expert_intermediate_size = 0;
                norm_topk_prob = false;
                shared_expert_intermediate_size = 0;
                decoder_sparse_step = 1;
                mlp_only_layers = Set.of();
                low_rank_experts_rank = 0;
                attention_bias = f.bool("attention_bias", false);
                qkv_bias = attention_bias;
                qkNorm = QkNorm.PER_HEAD;
                clip_qkv = null;
                if (f.bool("use_sliding_window", false)) {
                    throw new ModelConfigException(source + ": unsupported use_sliding_window true for qwen3 "
                            + "(per-layer windows by max_window_layers / layer_types)");
                }
                sliding_window = null;
            }
            default -> {
                num_experts = 0;
                num_experts_per_tok = 0;
                expert_intermediate_size = 0;
                norm_topk_prob = false;
                shared_expert_intermediate_size = 0;
                decoder_sparse_step = 1;
                mlp_only_layers = Set.of();
                low_rank_experts_rank = 0;
                qkv_bias = false;
                attention_bias = false;
                qkNorm = QkNorm.NONE;
                clip_qkv = null;
                sliding_window = f.optionalPositiveInt("sliding_window");
            }
        }
        n_shared_experts = sharedExperts;
        first_k_dense_replace = firstDense;
        this.routing = routing;
        low_rank_experts_form = lowRankForm(f, source, low_rank_experts_rank, clamped_experts);
        if (num_experts > 0 && num_experts_per_tok > num_experts) {
            throw new ModelConfigException(source + ": num_experts_per_tok " + num_experts_per_tok
                    + " exceeds the number of experts " + num_experts);
        }
    }

    /**
     * The router fields, {@code scoring_func} and {@code topk_method} defaulting to the type's own (GLM-4.5 has
     * neither); n_group must divide the experts and the kept groups must hold at least K experts.
     */
    private RoutingConfig routingConfig(Fields f, String source, String scoring, String method) {
        return routingConfig(f, source, scoring, method, 1, 1, 1.0);
    }

    /** {@link #routingConfig(Fields, String, String, String)} with the type's defaults for the absent fields. */
    private RoutingConfig routingConfig(Fields f, String source, String scoring, String method, int groups,
                                        int topGroups, double scaling) {
        RoutingConfig r;
        try {
            r = new RoutingConfig(f.has("scoring_func") ? f.string("scoring_func") : scoring,
                    f.has("topk_method") ? f.string("topk_method") : method,
                    f.has("n_group") ? f.positiveInt("n_group") : groups,
                    f.has("topk_group") ? f.positiveInt("topk_group") : topGroups,
                    f.has("routed_scaling_factor") ? f.positiveDouble("routed_scaling_factor") : scaling);
        } catch (IllegalArgumentException e) {
            throw new ModelConfigException(source + ": " + e.getMessage());
        }
        if (num_experts % r.n_group() != 0) {
            throw new ModelConfigException(source + ": n_group " + r.n_group() + " must divide n_routed_experts "
                    + num_experts);
        }
        if (r.groupLimited() && (long) r.topk_group() * (num_experts / r.n_group()) < num_experts_per_tok) {
            throw new ModelConfigException(source + ": topk_group " + r.topk_group() + " groups of "
                    + num_experts / r.n_group() + " experts cannot hold num_experts_per_tok " + num_experts_per_tok);
        }
        return r;
    }

    /** partial_rotary_factor under rope_parameters (where transformers 5 writes it) or top-level (GLM's releases). */
    private double partialRotaryFactor(Fields f, String source, double fallback) {
        Fields rope = f.has("rope_parameters") ? f.object("rope_parameters") : null;
        double factor = rope != null && rope.has("partial_rotary_factor") ? rope.positiveDouble("partial_rotary_factor")
                : f.has("partial_rotary_factor") ? f.positiveDouble("partial_rotary_factor") : fallback;
        int dim = (int) (head_dim * factor);
        if (factor > 1 || dim < 2 || dim % 2 != 0) {
            throw new ModelConfigException(source + ": partial_rotary_factor " + factor + " of head_dim " + head_dim
                    + " gives " + dim + " rotated entries; expected an even number in [2, head_dim]");
        }
        return factor;
    }

    /** RoPE rotates the leading {@code int(head_dim · partial_rotary_factor)} entries of each head. */
    public int rotaryDim() {
        return (int) (head_dim * partial_rotary_factor);
    }

    /**
     * The MLA sizes with transformers' defaults (q_lora_rank 1536 when absent, null when null; kv_lora_rank 512;
     * qk_rope_head_dim 64; qk_nope_head_dim 128; v_head_dim 128; rope_interleave: V2 always, V3 default true).
     */
    private static MlaConfig mlaConfig(Fields f, ModelType type, String source) {
        Integer qLora = !f.present("q_lora_rank") ? Integer.valueOf(1536)
                : f.has("q_lora_rank") ? Integer.valueOf(f.positiveInt("q_lora_rank")) : null;
        MlaConfig m = new MlaConfig(qLora,
                f.has("kv_lora_rank") ? f.positiveInt("kv_lora_rank") : 512,
                f.has("qk_nope_head_dim") ? f.nonNegativeInt("qk_nope_head_dim") : 128,
                f.has("qk_rope_head_dim") ? f.positiveInt("qk_rope_head_dim") : 64,
                f.has("v_head_dim") ? f.positiveInt("v_head_dim") : 128,
                type == ModelType.DEEPSEEK_V2 || f.bool("rope_interleave", true));
        if (m.qk_rope_head_dim() % 2 != 0) {
            throw new ModelConfigException(source + ": qk_rope_head_dim must be even for RoPE, got "
                    + m.qk_rope_head_dim());
        }
        return m;
    }

    /** Layers 0 .. k−1 (first_k_dense_replace), checked against the layer count. */
    private static Set<Integer> firstLayers(int k, int layers) {
        Set<Integer> out = new HashSet<>();
        for (int l = 0; l < Math.min(k, layers); l++) {
            out.add(l);
        }
        return Set.copyOf(out);
    }

    /** gpt-oss's layer_types, each sliding_attention or full_attention; GptOssConfig's alternation when absent. */
    private static java.util.List<String> layerTypes(Fields f, int layers) {
        java.util.List<String> out = new java.util.ArrayList<>();
        if (!f.has("layer_types")) {
            for (int l = 0; l < layers; l++) {
                out.add(l % 2 == 0 ? "sliding_attention" : "full_attention");
            }
            return java.util.List.copyOf(out);
        }
        JsonNode v = f.node("layer_types");
        if (!v.isArray() || v.size() != layers) {
            throw new ModelConfigException(f.source + ": field layer_types must list one type per layer ("
                    + layers + "), got " + v);
        }
        for (JsonNode e : v) {
            if (!e.isTextual() || !(e.asText().equals("sliding_attention") || e.asText().equals("full_attention"))) {
                throw new ModelConfigException(f.source + ": field layer_types holds " + e
                        + ", expected \"sliding_attention\" or \"full_attention\"");
            }
            out.add(e.asText());
        }
        return java.util.List.copyOf(out);
    }

    /** The attention window of layer {@code layer}: sliding_window, or null (full causal attention). */
    public Integer slidingWindow(int layer) {
        return layer_types == null || layer_types.get(layer).equals("sliding_attention") ? sliding_window : null;
    }

    /**
     * low_rank_experts_form: svd when absent; only beside low_rank_experts_rank; the CP and TR forms only for experts
     * without biases (not gpt-oss).
     */
    private static LowRankForm lowRankForm(Fields f, String source, int rank, boolean expertBiases) {
        if (!f.has(LOW_RANK_FORM_FIELD)) {
            return LowRankForm.SVD;
        }
        String name = f.string(LOW_RANK_FORM_FIELD);
        LowRankForm form = java.util.Arrays.stream(LowRankForm.values()).filter(v -> v.id().equals(name)).findFirst()
                .orElseThrow(() -> new ModelConfigException(source + ": " + LOW_RANK_FORM_FIELD + " must be one of "
                        + java.util.Arrays.stream(LowRankForm.values()).map(LowRankForm::id).toList() + ", got "
                        + name));
        if (rank == 0) {
            throw new ModelConfigException(source + ": " + LOW_RANK_FORM_FIELD + " needs " + LOW_RANK_FIELD);
        }
        if (form != LowRankForm.SVD && expertBiases) {
            throw new ModelConfigException(source + ": " + LOW_RANK_FORM_FIELD + " " + form.id() + " is not built for "
                    + "experts with biases (gpt_oss)");
        }
        return form;
    }

    /** low_rank_experts_rank (or its old name), 0 when absent. */
    private static int lowRankRank(Fields f) {
        return f.has(LOW_RANK_FIELD) ? f.positiveInt(LOW_RANK_FIELD)
                : f.has(OLD_LOW_RANK_FIELD) ? f.positiveInt(OLD_LOW_RANK_FIELD) : 0;
    }

    /**
     * The RoPE parameters as transformers 5.17 standardises them: {@code rope_scaling} (the older name) when set,
     * else {@code rope_parameters}, else none.
     */
    private static Fields ropeParameters(Fields f) {
        return f.has("rope_scaling") ? f.object("rope_scaling")
                : f.has("rope_parameters") ? f.object("rope_parameters") : null;
    }

    private static double ropeTheta(Fields f, String source) {
        Fields rope = ropeParameters(f);
        if (rope != null && rope.has("rope_theta")) {
            return rope.positiveDouble("rope_theta");
        }
        if (f.has("rope_theta")) {
            return f.positiveDouble("rope_theta");
        }
        if (f.has("rope_parameters") && f.object("rope_parameters").has("rope_theta")) {
            return f.object("rope_parameters").positiveDouble("rope_theta");
        }
        throw new ModelConfigException(source + ": missing rope_theta (neither top-level nor under rope_parameters)");
    }

    /**
     * The YaRN parameters when the rope type is "yarn", null for "default"; any other type is refused. Defaults as
     * {@code _compute_yarn_parameters}: factor = max_position_embeddings / original_max_position_embeddings when
     * null; original_max_position_embeddings from the top level, then the rope dict, then max_position_embeddings;
     * beta_fast 32 and beta_slow 1 when absent or 0; mscale and mscale_all_dim unset when absent or 0; truncate true.
     */
    private static YarnScaling yarn(Fields f, int maxPositions, String source) {
        Fields rope = ropeParameters(f);
        if (rope == null) {
            return null;
        }
        String field = f.has("rope_scaling") ? "rope_scaling" : "rope_parameters";
        String type = rope.has("rope_type") ? rope.string("rope_type") : rope.has("type") ? rope.string("type")
                : "default";
        if (type.equals("default")) {
            return null;
        }
        if (!type.equals("yarn")) {
            throw new ModelConfigException(source + ": unsupported " + field + " rope_type \"" + type
                    + "\" (supported: default, yarn)");
        }
        int original = f.has("original_max_position_embeddings") ? f.positiveInt("original_max_position_embeddings")
                : rope.has("original_max_position_embeddings") ? rope.positiveInt("original_max_position_embeddings")
                : maxPositions;
        double factor = rope.has("factor") ? rope.positiveDouble("factor") : (double) maxPositions / original;
        return new YarnScaling(factor, original, orDefault(rope, "beta_fast", 32), orDefault(rope, "beta_slow", 1),
                setOrNull(rope, "mscale"), setOrNull(rope, "mscale_all_dim"),
                rope.has("attention_factor") ? rope.positiveDouble("attention_factor") : null,
                rope.bool("truncate", true));
    }

    /**
     * The FP8 block size of {@code quantization_config} (quant_method "fp8", fmt "e4m3" when given, weight_block_size
     * two positive integers); null without the field and for gpt-oss's "mxfp4" (its experts' blocks and scales are
     * recognised by their tensors); any other quantization is refused.
     */
    private static int[] fp8BlockSize(Fields f, ModelType type, String source) {
        if (!f.has("quantization_config")) {
            return null;
        }
        Fields q = f.object("quantization_config");
        String method = q.has("quant_method") ? q.string("quant_method") : "";
        if (type == ModelType.GPT_OSS && method.equals("mxfp4")) {
            return null;
        }
        if (!method.equals("fp8") || (q.has("fmt") && !q.string("fmt").equals("e4m3"))) {
            throw new ModelConfigException(source + ": unsupported quantization_config " + f.raw("quantization_config")
                    + " (supported: quant_method fp8, fmt e4m3, with weight_block_size; mxfp4 for gpt_oss)");
        }
        int[] block = q.intList("weight_block_size");
        if (block.length != 2 || block[0] < 1 || block[1] < 1) {
            throw new ModelConfigException(source + ": quantization_config.weight_block_size must be two positive "
                    + "integers, got " + q.raw("weight_block_size"));
        }
        return block;
    }

    /** A field that Python reads as {@code d.get(name) or fallback}. */
    private static double orDefault(Fields rope, String name, double fallback) {
        return rope.has(name) && rope.nonNegativeDouble(name) != 0 ? rope.nonNegativeDouble(name) : fallback;
    }

    /** A field that Python tests for truth: absent, null and 0 all mean unset. */
    private static Double setOrNull(Fields rope, String name) {
        return rope.has(name) && rope.nonNegativeDouble(name) != 0 ? rope.nonNegativeDouble(name) : null;
    }

    public static ModelConfig parse(String jsonText, String source) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(jsonText);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new ModelConfigException(source + ": malformed JSON: " + e.getOriginalMessage());
        }
        if (root == null || !root.isObject()) {
            throw new ModelConfigException(source + ": expected a JSON object");
        }
        return new ModelConfig((ObjectNode) root, source);
    }

    /** Whether decoder layer {@code layer} has a sparse MoE block (Qwen2/3-MoE's sparse step and mlp_only_layers). */
    public boolean isMoeLayer(int layer) {
        return num_experts > 0 && !mlp_only_layers.contains(layer) && (layer + 1) % decoder_sparse_step == 0;
    }

    /**
     * Whether the MoE layers hold factorised experts (a shared base plus low-rank experts, the CP or the TR form)
     * instead of full experts.
     */
    public boolean hasLowRankExperts() {
        return low_rank_experts_rank > 0;
    }

    /** Whether the MoE layers hold the CP form of {@code surgery lowrank --form cp}. */
    public boolean hasCpExperts() {
        return hasLowRankExperts() && low_rank_experts_form == LowRankForm.CP;
    }

    /** Whether the MoE layers hold the TR form of {@code surgery lowrank --form tr}. */
    public boolean hasTrExperts() {
        return hasLowRankExperts() && low_rank_experts_form == LowRankForm.TR;
    }

    public boolean hasSharedExpert() {
        return shared_expert_intermediate_size > 0;
    }

    /** Whether the shared expert is scaled by sigmoid(x·Wsgᵀ) (Qwen2-MoE's shared_expert_gate) or added as it is. */
    public boolean hasSharedExpertGate() {
        return hasSharedExpert() && modelType == ModelType.QWEN2_MOE;
    }

    /** A deep copy of the original JSON, for writers that change a few fields. */
    public ObjectNode jsonCopy() {
        return json.deepCopy();
    }

    /** Typed access to config fields with errors that name the field, the expectation and the value. */
    private static final class Fields {
        private final JsonNode node;
        private final String source;

        Fields(JsonNode node, String source) {
            this.node = node;
            this.source = source;
        }

        boolean has(String name) {
            JsonNode v = node.get(name);
            return v != null && !v.isNull();
        }

        JsonNode node(String name) {
            return node.get(name);
        }

        /** Whether the field is there at all, null included. */
        boolean present(String name) {
            return node.has(name);
        }

        String raw(String name) {
            return String.valueOf(node.get(name));
        }

        private JsonNode required(String name) {
            if (!has(name)) {
                throw new ModelConfigException(source + ": missing field " + name);
            }
            return node.get(name);
        }

        String string(String name) {
            JsonNode v = required(name);
            if (!v.isTextual()) {
                throw new ModelConfigException(source + ": field " + name + " must be a string, got " + v);
            }
            return v.asText();
        }

        Fields object(String name) {
            JsonNode v = required(name);
            if (!v.isObject()) {
                throw new ModelConfigException(source + ": field " + name + " must be an object, got " + v);
            }
            return new Fields(v, source + " " + name);
        }

        int positiveInt(String name) {
            int v = nonNegativeInt(name);
            if (v == 0) {
                throw new ModelConfigException(source + ": field " + name + " must be > 0, got 0");
            }
            return v;
        }

        int nonNegativeInt(String name) {
            JsonNode v = required(name);
            if (!v.canConvertToInt() || !v.isIntegralNumber() || v.asInt() < 0) {
                throw new ModelConfigException(source + ": field " + name + " must be a non-negative integer, got " + v);
            }
            return v.asInt();
        }

        Integer optionalPositiveInt(String name) {
            return has(name) ? positiveInt(name) : null;
        }

        double positiveDouble(String name) {
            double v = nonNegativeDouble(name);
            if (v == 0) {
                throw new ModelConfigException(source + ": field " + name + " must be > 0, got 0");
            }
            return v;
        }

        double nonNegativeDouble(String name) {
            JsonNode v = required(name);
            if (!v.isNumber() || !(v.asDouble() >= 0) || Double.isInfinite(v.asDouble())) {
                throw new ModelConfigException(source + ": field " + name + " must be a non-negative number, got " + v);
            }
            return v.asDouble();
        }

        boolean bool(String name, boolean fallback) {
            if (!has(name)) {
                return fallback;
            }
            JsonNode v = node.get(name);
            if (!v.isBoolean()) {
                throw new ModelConfigException(source + ": field " + name + " must be true or false, got " + v);
            }
            return v.asBoolean();
        }

        int[] intList(String name) {
            JsonNode v = required(name);
            if (!v.isArray()) {
                throw new ModelConfigException(source + ": field " + name + " must be a list of integers, got " + v);
            }
            int[] out = new int[v.size()];
            for (int i = 0; i < out.length; i++) {
                if (!v.get(i).isIntegralNumber()) {
                    throw new ModelConfigException(source + ": field " + name + " must be a list of integers, got "
                            + v);
                }
                out[i] = v.get(i).asInt();
            }
            return out;
        }

        Set<Integer> intSet(String name, int bound) {
            Set<Integer> out = new HashSet<>();
            if (!has(name)) {
                return Set.of();
            }
            JsonNode v = node.get(name);
            if (!v.isArray()) {
                throw new ModelConfigException(source + ": field " + name + " must be a list of layer indices, got " + v);
            }
            for (Iterator<JsonNode> it = v.elements(); it.hasNext(); ) {
                JsonNode e = it.next();
                if (!e.isIntegralNumber() || e.asInt() < 0 || e.asInt() >= bound) {
                    throw new ModelConfigException(source + ": field " + name + " holds " + e
                            + ", expected a layer index in [0, " + bound + ")");
                }
                out.add(e.asInt());
            }
            return Set.copyOf(out);
        }
    }
}
