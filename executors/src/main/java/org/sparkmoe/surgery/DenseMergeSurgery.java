package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

import java.util.LinkedHashMap;
import java.util.List;

/**
 * MoE → dense: per MoE layer i, W_P = Σₑ wᵢₑ·W_{P,e} for P = w1, w3, w2, written as a Mistral dense MLP
 * ({@code mlp.gate_proj/up_proj/down_proj}); the router and the experts are dropped and config.json becomes a
 * {@code mistral} config. Mixtral only (a Qwen2-MoE shared expert and q/k/v biases have no Mistral counterpart).
 */
public final class DenseMergeSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;
    /** Mixtral config fields with no meaning for a dense Mistral. */
    private static final List<String> MOE_FIELDS = List.of("num_local_experts", "num_experts_per_tok",
            "router_aux_loss_coef", "router_jitter_noise", "output_router_logits");
    private final double[][] weights; // [MoE layers][E]
    private final int experts;

    public DenseMergeSurgery(ModelConfig model, double[][] weights) {
        if (model.modelType != ModelConfig.ModelType.MIXTRAL) {
            throw new IllegalArgumentException("merge-dense needs a mixtral model, got model_type "
                    + model.modelType.name().toLowerCase());
        }
        this.weights = new double[weights.length][];
        for (int i = 0; i < weights.length; i++) {
            this.weights[i] = weights[i].clone();
        }
        this.experts = model.num_experts;
    }

    /** One part per projection (w1, w3, w2). */
    @Override
    public int parts() {
        return Projection.values().length;
    }

    @Override
    public LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(ModelConfig.ModelType.MIXTRAL);
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        Projection p = Projection.values()[part];
        INDArray stack = ExpertStack.read(source, layout, layer, experts, p); // [E, rows, cols]
        out.put(CheckpointLayout.denseMlp(layer, p), ExpertStack.weightedSum(stack, weights[moeLayer]));
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        for (int e = 0; e < experts; e++) {
            metrics.put("weight_" + e, weights[moeLayer][e]);
        }
        return new LayerResult(out, null, metrics);
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        json.put("model_type", "mistral");
        json.putArray("architectures").add("MistralForCausalLM");
        MOE_FIELDS.forEach(json::remove);
        return json;
    }
}
