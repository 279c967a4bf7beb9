package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

import java.util.LinkedHashMap;

/**
 * Top-K → top-M: {@code num_experts_per_tok} = M and every expert's down-projection (w2) of MoE layer i scaled by αᵢ,
 * and for gpt-oss its down bias too (the expert output yᵢ = W2ᵢ·act + b2ᵢ scales as a whole; see {@link TopKRescale}).
 */
public final class TopKSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;
    /** Float32 bytes of down projections one part reads and scales at most (a task's share of a layer). */
    static final long PART_BYTES = 64L << 20;
    private final int newTopK;
    private final double[] alpha; // [MoE layers]
    private final ModelConfig.ModelType type;
    private final int experts;
    private final boolean downBias;   // gpt-oss
    private final int expertsPerPart;

    public TopKSurgery(ModelConfig model, int newTopK, double[] alpha) {
        if (newTopK < 1 || newTopK > model.num_experts) {
            throw new IllegalArgumentException("--top-k must be in [1, " + model.num_experts + "] (the model's experts), got "
                    + newTopK);
        }
        if (model.routing.groupLimited()) {
            int kept = model.routing.topk_group() * (model.num_experts / model.routing.n_group());
            if (newTopK > kept) {
                throw new IllegalArgumentException("--top-k must be at most " + kept + " (topk_group "
                        + model.routing.topk_group() + " of n_group " + model.routing.n_group()
                        + " groups hold that many experts), got " + newTopK);
            }
        }
        this.newTopK = newTopK;
        this.alpha = alpha.clone();
        this.type = model.modelType;
        this.experts = model.num_experts;
        this.downBias = model.clamped_experts;
        long expertBytes = 4L * model.hidden_size * model.expert_intermediate_size;   // one down projection, float32
        this.expertsPerPart = (int) Math.max(1, Math.min(experts, PART_BYTES / expertBytes));
    }

    /** A layer's experts in slices of at most {@link #PART_BYTES} of float32 down projections each. */
    @Override
    public int parts() {
        return (experts + expertsPerPart - 1) / expertsPerPart;
    }

    /** The part's scaled down projections (and gpt-oss's down biases), float32. */
    @Override
    public long partBytes(ModelConfig model) {
        return (long) expertsPerPart * Float.BYTES * ((long) model.hidden_size * model.expert_intermediate_size
                + (downBias ? model.hidden_size : 0));
    }

    /** αᵢ per MoE layer for the given method; {@code stats} is read only by MEASURED. */
    public static double[] alphas(TopKRescale.Method method, ModelConfig model, int moeLayers, int newTopK,
            RoutingStats stats) {
        if (method != TopKRescale.Method.NONE && !model.norm_topk_prob) {
            throw new IllegalArgumentException("--rescale " + method.name().toLowerCase()
                    + " assumes renormalised top-k weights; this model has norm_topk_prob false (use --rescale none)");
        }
        double[] out = new double[moeLayers];
        for (int i = 0; i < moeLayers; i++) {
            out[i] = switch (method) {
                case NONE -> 1.0;
                case UNIFORM -> TopKRescale.uniform(model.num_experts_per_tok, newTopK);
                case MEASURED -> TopKRescale.measured(stats.layer(i), model.num_experts_per_tok, newTopK);
            };
        }
        return out;
    }

    @Override
    public LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(type);
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        // α = 1 changes no tensor: the writer copies the layer's experts from the source as they are stored
        int last = alpha[moeLayer] == 1.0 ? 0 : Math.min(experts, (part + 1) * expertsPerPart);
        for (int e = part * expertsPerPart; e < last; e++) {
            String name = layout.expert(layer, e, Projection.DOWN);
            out.put(name, source.readFloat(name).muli(alpha[moeLayer]));               // [D, I]
            if (downBias) {
                String bias = layout.expertBias(layer, e, Projection.DOWN);
                out.put(bias, source.readFloat(bias).muli(alpha[moeLayer]));           // [D]
            }
        }
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        metrics.put("alpha", alpha[moeLayer]);
        return new LayerResult(out, null, metrics);
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        json.put("num_experts_per_tok", newTopK);
        return json;
    }
}
