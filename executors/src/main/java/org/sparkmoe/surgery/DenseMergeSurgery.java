package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

import java.util.LinkedHashMap;
import java.util.List;

/**
 * MoE → dense: per MoE layer i, W_P = Σₑ wᵢₑ·W_{P,e} for the gate, up and down projections; the router and the
 * experts are dropped. What is written depends on the model type, so that transformers loads it:
 * <ul>
 *   <li>{@code mixtral} → a {@code mistral} checkpoint ({@code mlp.gate_proj/up_proj/down_proj}).</li>
 *   <li>{@code qwen3_moe} → a dense {@code qwen3} checkpoint; attention, its q/k norms and biases are kept as they are.
 *   Qwen3 has one {@code intermediate_size} for every layer: when mlp_only layers (of intermediate_size) remain, each
 *   merged MLP [I, D] / [D, I] is padded with zero rows of gate/up and zero columns of down up to intermediate_size,
 *   which changes nothing (silu(0)·0 = 0); a model whose dense layers are narrower than its experts, or that uses a
 *   sliding window (per-layer in dense Qwen3), is refused.</li>
 *   <li>{@code olmoe} → an {@code olmoe} with one expert per layer (the merged weights as expert 0, a zero router
 *   [1, D], num_experts = num_experts_per_tok = 1). There is no dense OLMo with OLMoE's attention (q/k norms over the
 *   whole projection, clip_qkv), and with one expert the softmax gives weight 1, so the layer is exactly the merged
 *   SwiGLU MLP.</li>
 *   <li>{@code gpt_oss} → a {@code gpt_oss} with one expert per layer, likewise (merged weights and merged biases as
 *   expert 0, a zero router weight [1, D] and bias [1], num_local_experts = num_experts_per_tok = 1): no dense model
 *   type of transformers has attention sinks, the alternating sliding/full layers with q/k/v/o biases, or the
 *   clamped gate with expert biases, while a one-expert gpt_oss is exactly that dense layer (softmax over one logit
 *   is 1, the down bias then enters with weight 1).</li>
 *   <li>{@code glm4_moe}, {@code deepseek_v2} and {@code deepseek_v3} (Kimi-K2) → the same model type with every layer
 *   dense ({@code first_k_dense_replace} = L), the form their own first k layers already have, so transformers and
 *   every command load it unchanged (MLA attention, YaRN and the other fields stay as they are): the shared experts
 *   and the merged routed expert are folded into one SwiGLU MLP, exactly their sum, by stacking their intermediate
 *   units — gate/up [I + S, D] = [merged; shared], down [D, I + S] = [c·merged, shared] with c =
 *   routed_scaling_factor (the renormalised routing weights of the mixture the merged expert stands for sum to c;
 *   DeepSeek-V2 does not renormalise, and the merge then stands for weights summing to 1 before the scale, as for
 *   OLMoE) — padded with zero units to intermediate_size: these types' dense MLPs (Glm4MoeMLP, DeepseekV2MLP,
 *   DeepseekV3MLP without an explicit width) all read the one intermediate_size, and a zero unit adds silu(0)·0 = 0.
 *   Refused when intermediate_size is narrower than I + S. The routers and their correction biases are dropped; the
 *   MoE fields (n_routed_experts, n_group, …) stay, unused.</li>
 * </ul>
 * Qwen2-MoE is refused: its shared expert and sigmoid shared-expert gate have no dense counterpart.
 */
public final class DenseMergeSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;
    /** MoE config fields with no meaning for the dense model. */
    private static final List<String> MOE_FIELDS = List.of("num_local_experts", "num_experts", "num_experts_per_tok",
            "router_aux_loss_coef", "router_jitter_noise", "output_router_logits", "moe_intermediate_size",
            "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers");
    private final double[][] weights; // [MoE layers][E]
    private final int experts;
    private final ModelConfig.ModelType type;
    /** Width of each merged MLP: I, or intermediate_size when Qwen3's dense layers keep theirs (GLM: always). */
    private final int width;
    /** GLM, DeepSeek: routed_scaling_factor, multiplying the merged routed expert's down projection. */
    private final double routedScale;
    /** GLM, DeepSeek: whether the layers hold shared experts (n_shared_experts > 0), folded beside the merged one. */
    private final boolean shared;

    public DenseMergeSurgery(ModelConfig model, double[][] weights) {
        String type = model.modelType.name().toLowerCase();
        switch (model.modelType) {
            case MIXTRAL, OLMOE, GPT_OSS -> this.width = model.expert_intermediate_size;
            case QWEN3_MOE -> this.width = qwen3Width(model);
            case GLM4_MOE, DEEPSEEK_V2, DEEPSEEK_V3 -> this.width = foldedWidth(model);
            default -> throw new IllegalArgumentException("merge-dense supports mixtral, qwen3_moe, olmoe, glm4_moe, "
                    + "gpt_oss, deepseek_v2 and deepseek_v3, got "
                    + "model_type " + type + (model.modelType == ModelConfig.ModelType.QWEN2_MOE
                    ? " (its shared expert has no dense counterpart)" : ""));
        }
        this.weights = new double[weights.length][];
        for (int i = 0; i < weights.length; i++) {
            this.weights[i] = weights[i].clone();
        }
        this.experts = model.num_experts;
        this.type = model.modelType;
        this.routedScale = model.routing.routed_scaling_factor();
        this.shared = model.hasSharedExpert();
    }

    /** intermediate_size, which must hold the merged expert and the shared experts side by side. */
    private static int foldedWidth(ModelConfig model) {
        int folded = model.expert_intermediate_size + model.shared_expert_intermediate_size;
        if (model.intermediate_size < folded) {
            throw new IllegalArgumentException("merge-dense of " + model.modelType.name().toLowerCase()
                    + ": intermediate_size " + model.intermediate_size
                    + " cannot hold the merged expert and the shared expert side by side (moe_intermediate_size "
                    + model.expert_intermediate_size + " + shared " + model.shared_expert_intermediate_size + ")");
        }
        return model.intermediate_size;
    }

    /** intermediate_size when some layers stay dense (and are at least as wide as the experts), else I. */
    private static int qwen3Width(ModelConfig model) {
        if (model.sliding_window != null) {
            throw new IllegalArgumentException("merge-dense of a qwen3_moe with use_sliding_window true is not supported "
                    + "(dense qwen3 windows only layers from max_window_layers on)");
        }
        boolean anyDense = false;
        for (int l = 0; l < model.num_hidden_layers; l++) {
            anyDense |= !model.isMoeLayer(l);
        }
        if (!anyDense) {
            return model.expert_intermediate_size;
        }
        if (model.intermediate_size < model.expert_intermediate_size) {
            throw new IllegalArgumentException("merge-dense of qwen3_moe: its dense layers' intermediate_size "
                    + model.intermediate_size + " is narrower than moe_intermediate_size " + model.expert_intermediate_size
                    + ", and dense qwen3 has one width for every layer");
        }
        return model.intermediate_size;
    }

    /** One part per projection (gate, up, down). */
    @Override
    public int parts() {
        return Projection.values().length;
    }

    @Override
    public LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(type);
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        Projection p = Projection.values()[part];
        ExpertStack stack = ExpertStack.of(source, layout, layer, experts, p);                 // E × [rows, cols]
        INDArray merged = stack.weightedSum(weights[moeLayer], DataType.FLOAT); // gate/up [I, D], down [D, I]
        if (folds()) {
            INDArray routed = p == Projection.DOWN ? merged.muli(routedScale) : merged;   // [D, I] scaled, or [I, D]
            INDArray folded = routed;
            if (shared) {
                INDArray s = source.readFloat(layout.sharedExpert(layer, p)).castTo(merged.dataType()); // [S, D], [D, S]
                folded = p == Projection.DOWN ? Nd4j.concat(1, routed, s)                           // [D, I + S]
                        : Nd4j.concat(0, routed, s);                                                 // [I + S, D]
            }
            out.put(CheckpointLayout.denseMlp(layer, p), padded(folded, p));
        } else if (type == ModelConfig.ModelType.OLMOE || type == ModelConfig.ModelType.GPT_OSS) {
            out.put(layout.expert(layer, 0, p), merged);
            if (p == Projection.GATE) {
                out.put(layout.routerGate(layer), Nd4j.zeros(merged.dataType(), 1, merged.size(1))); // [1, D]
            }
            if (type == ModelConfig.ModelType.GPT_OSS) {
                INDArray biases = ExpertStack.readBiases(source, layout, layer, experts, p);        // [E, 1, n]
                out.put(layout.expertBias(layer, 0, p),
                        ExpertStack.weightedSum(biases, weights[moeLayer]).reshape(-1));
                if (p == Projection.GATE) {
                    out.put(layout.routerBias(layer), Nd4j.zeros(merged.dataType(), 1));          // [1]
                }
            }
        } else {
            out.put(CheckpointLayout.denseMlp(layer, p), padded(merged, p));
        }
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        for (int e = 0; e < experts; e++) {
            metrics.put("weight_" + e, weights[moeLayer][e]);
        }
        return new LayerResult(out, null, metrics);
    }

    /**
     * One projection's arrays at once, float32 rows of D: the merged [I, D]; with a shared expert folded in, the
     * shared [S, D] read and their concatenation [I + S, D]; the [W, D] that is padded into when W is wider (no copy
     * when it is not: Mixtral, OLMoE, gpt-oss); and the scratch of one {@link ExpertStack}.
     */
    @Override
    public long partBytes(ModelConfig model) {
        long merged = model.expert_intermediate_size;
        long sharedRows = shared ? model.shared_expert_intermediate_size : 0;
        long folded = merged + sharedRows;
        long rows = merged + (shared ? sharedRows + folded : 0) + (width != folded ? width : 0);
        return Float.BYTES * model.hidden_size * rows + ExpertStack.scratchBytes();
    }

    /** GLM and DeepSeek: shared and merged routed experts folded into the type's own dense MLP. */
    private boolean folds() {
        return type == ModelConfig.ModelType.GLM4_MOE || type == ModelConfig.ModelType.DEEPSEEK_V2
                || type == ModelConfig.ModelType.DEEPSEEK_V3;
    }

    /** gate/up [I, D] → [W, D] with zero rows after I; down [D, I] → [D, W] with zero columns after I. */
    private INDArray padded(INDArray merged, Projection p) {
        boolean down = p == Projection.DOWN;
        long inner = down ? merged.size(1) : merged.size(0);
        if (inner == width) {
            return merged;
        }
        INDArray out = down ? Nd4j.zeros(merged.dataType(), merged.size(0), width)
                : Nd4j.zeros(merged.dataType(), width, merged.size(1));
        if (down) {
            out.get(NDArrayIndex.all(), NDArrayIndex.interval(0, inner)).assign(merged);
        } else {
            out.get(NDArrayIndex.interval(0, inner), NDArrayIndex.all()).assign(merged);
        }
        return out;
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        switch (type) {
            case MIXTRAL -> {
                json.put("model_type", "mistral");
                json.putArray("architectures").add("MistralForCausalLM");
                MOE_FIELDS.forEach(json::remove);
            }
            case QWEN3_MOE -> {
                json.put("model_type", "qwen3");
                json.putArray("architectures").add("Qwen3ForCausalLM");
                MOE_FIELDS.forEach(json::remove);
                json.put("intermediate_size", width);
                json.put("head_dim", original.head_dim); // Qwen3Config's default is 128, not hidden/heads
            }
            case GLM4_MOE, DEEPSEEK_V2, DEEPSEEK_V3 -> {
                json.put("first_k_dense_replace", original.num_hidden_layers);
            }
            case GPT_OSS -> {
                json.remove("num_experts");
                json.put("num_local_experts", 1);
                json.put("num_experts_per_tok", 1);
            }
            default -> { // OLMOE
                json.remove("num_local_experts");
                json.put("num_experts", 1);
                json.put("num_experts_per_tok", 1);
            }
        }
        return json;
    }
}
