package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

import java.util.LinkedHashMap;

/**
 * Full experts → shared base + rank-R LoRA experts. Per MoE layer and projection P: base_P = Σₑ wₑ·W_{P,e} (w uniform,
 * or the calibration selection frequencies), and every expert W_{P,e} ≈ base_P + B_{P,e}·A_{P,e} from the truncated
 * SVD of W_{P,e} − base_P (the best rank-R approximation in Frobenius norm). Written as
 * {@code <moe prefix>shared_base.<proj>.weight} and the stacked {@code <moe prefix>experts.<proj>.lora_A} [E, R, in] /
 * {@code lora_B} [E, out, R] (scale 1: B carries the singular values), with {@code low_rank_experts_rank} = R in
 * config.json. Reports, per projection [out, in], the relative Frobenius error √(Σₑ‖W_e − base − B_e·A_e‖²) /
 * √(Σₑ‖W_e‖²) and the parameters before (E·out·in) and after (out·in + E·R·(out + in)). One part per projection.
 */
public final class LowRankSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    private final ModelConfig.ModelType type;
    private final int rank;
    private final int experts;
    private final double[][] baseWeights; // [MoE layers][E], sum 1

    /** @param baseWeights per MoE layer, the weights of the experts in the base (each row sums to 1) */
    public LowRankSurgery(ModelConfig model, int rank, double[][] baseWeights) {
        if (model.num_experts == 0 || model.hasSharedExpertGate() || model.hasLowRankExperts()) {
            throw new IllegalArgumentException("lowrank needs a model with full experts and no gated shared expert "
                    + "(mixtral, qwen3_moe, olmoe, glm4_moe), got model_type " + model.modelType.name().toLowerCase()
                    + (model.hasLowRankExperts() ? " already low-rank" : model.hasSharedExpertGate()
                    ? " with a gated shared expert" : ""));
        }
        if (model.clamped_experts) {
            throw new IllegalArgumentException("lowrank does not support gpt_oss: the low-rank expert layers (shared "
                    + "base + LoRA experts) have no expert biases and no clamped gate");
        }
        this.type = model.modelType;
        int max = Math.min(model.hidden_size, model.expert_intermediate_size);
        if (rank < 1 || rank > max) {
            throw new IllegalArgumentException("--rank must be in [1, " + max + "] (min of hidden_size "
                    + model.hidden_size + " and intermediate_size " + model.expert_intermediate_size + "), got " + rank);
        }
        this.rank = rank;
        this.experts = model.num_experts;
        this.baseWeights = new double[baseWeights.length][];
        for (int i = 0; i < baseWeights.length; i++) {
            this.baseWeights[i] = baseWeights[i].clone();
        }
    }

    /** Weights ∝ the selection counts (uniform when none was selected). */
    public static double[] frequencyWeights(long[] count) {
        double sum = 0;
        for (long c : count) {
            sum += c;
        }
        double[] w = new double[count.length];
        for (int e = 0; e < w.length; e++) {
            w[e] = sum > 0 ? count[e] / sum : 1.0 / w.length;
        }
        return w;
    }

    /** One part per projection (w1, w3, w2). */
    @Override
    public int parts() {
        return Projection.values().length;
    }

    @Override
    public LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(type);
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        Projection p = Projection.values()[part];
        INDArray stack = ExpertStack.read(source, layout, layer, experts, p).castTo(DataType.DOUBLE); // [E, out, in]
        long rows = stack.size(1);
        long cols = stack.size(2);
        INDArray base = ExpertStack.weightedSum(stack, baseWeights[moeLayer]);                       // [out, in]
        INDArray a = Nd4j.create(DataType.FLOAT, experts, rank, cols);                                // [E, R, in]
        INDArray b = Nd4j.create(DataType.FLOAT, experts, rows, rank);                                // [E, out, R]
        double error2 = 0;
        double norm2 = 0;
        for (int e = 0; e < experts; e++) {
            INDArray w = stack.slice(e);
            TruncatedSvd.Factors f = TruncatedSvd.of(w.sub(base), rank);
            a.slice(e).assign(f.a());
            b.slice(e).assign(f.b());
            // the error of what is stored: float32 base and factors
            INDArray approx = base.castTo(DataType.FLOAT).castTo(DataType.DOUBLE)
                    .add(b.slice(e).castTo(DataType.DOUBLE).mmul(a.slice(e).castTo(DataType.DOUBLE)));
            double err = w.sub(approx).norm2Number().doubleValue();
            double norm = w.norm2Number().doubleValue();
            error2 += err * err;
            norm2 += norm * norm;
        }
        out.put(layout.sharedBase(layer, p), base.castTo(DataType.FLOAT));
        out.put(layout.stackedLoraA(layer, p), a);
        out.put(layout.stackedLoraB(layer, p), b);
        String name = layout.projectionName(p);
        metrics.put(name + "_rel_error", Math.sqrt(error2 / norm2));
        metrics.put(name + "_params_before", (double) (experts * rows * cols));
        metrics.put(name + "_params_after", (double) (rows * cols + experts * rank * (rows + cols)));
        return new LayerResult(out, null, metrics);
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        json.put(ModelConfig.LOW_RANK_FIELD, rank);
        return json;
    }
}
