package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.FusedExperts;
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
 *
 * <p>gpt-oss: its fused {@code gate_up_proj} [E, D, 2I] holds gate row k at column 2k and up row k at 2k + 1, a row
 * permutation of the stacked [W1; W3] [2I, D] (read per expert through {@code FusedExperts}). The SVD runs on the
 * gate W1 and the up W3 separately, so each gets its own best rank-R approximation as for any other type; at full
 * rank W1 and W3, hence the interleaved matrix, are exact. (A joint rank-R SVD of the interleaved matrix would be
 * the permuted joint SVD of [W1; W3], since a row permutation leaves singular values and right vectors unchanged: the
 * interleaving never matters.) The biases are kept per expert exactly, written as gpt-oss stores them
 * ({@code experts.gate_up_proj_bias} [E, 2I] interleaved, with the gate part; {@code experts.down_proj_bias} [E, D],
 * with the down part), and mixed per token with the routing weights of the LoRA terms. They are E·(2I + D) numbers,
 * nothing beside the LoRA experts, and gpt-oss's weights (softmax over the top K) sum to 1, so the low-rank form at
 * full rank computes the FFN of Σₖ gₖ·(Wₖ, cₖ) — the original expert exactly when K = 1. Averaging them into the
 * base would add an error no rank removes.
 */
public final class LowRankSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    private final ModelConfig.ModelType type;
    private final int rank;
    private final int experts;
    private final boolean biases;     // gpt-oss: each expert's biases, kept as they are
    private final double[][] baseWeights; // [MoE layers][E], sum 1

    /** @param baseWeights per MoE layer, the weights of the experts in the base (each row sums to 1) */
    public LowRankSurgery(ModelConfig model, int rank, double[][] baseWeights) {
        if (model.num_experts == 0 || model.hasSharedExpertGate() || model.hasLowRankExperts()) {
            throw new IllegalArgumentException("lowrank needs a model with full experts and no gated shared expert "
                    + "(mixtral, qwen3_moe, olmoe, glm4_moe, gpt_oss, deepseek_v2, deepseek_v3), got model_type "
                    + model.modelType.name().toLowerCase()
                    + (model.hasLowRankExperts() ? " already low-rank" : model.hasSharedExpertGate()
                    ? " with a gated shared expert" : ""));
        }
        this.type = model.modelType;
        this.biases = model.clamped_experts;
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
        ExpertStack stack = ExpertStack.of(source, layout, layer, experts, p);                    // E × [out, in]
        long rows = stack.rows();
        long cols = stack.cols();
        INDArray base = stack.weightedSum(baseWeights[moeLayer], DataType.DOUBLE);                  // [out, in]
        INDArray storedBase = base.castTo(DataType.FLOAT);                                          // [out, in]
        INDArray storedBase64 = storedBase.castTo(DataType.DOUBLE);                                 // [out, in]
        INDArray a = Nd4j.create(DataType.FLOAT, experts, rank, cols);                                // [E, R, in]
        INDArray b = Nd4j.create(DataType.FLOAT, experts, rows, rank);                                // [E, out, R]
        double error2 = 0;
        double norm2 = 0;
        for (int e = 0; e < experts; e++) {
            INDArray w = stack.expert(e).castTo(DataType.DOUBLE);                                   // [out, in]
            TruncatedSvd.Factors f = TruncatedSvd.of(w.sub(base), rank);
            a.slice(e).assign(f.a());
            b.slice(e).assign(f.b());
            // the error of what is stored: float32 base and factors (B·A + base, then w − that, in place)
            INDArray approx = b.slice(e).castTo(DataType.DOUBLE).mmul(a.slice(e).castTo(DataType.DOUBLE))
                    .addi(storedBase64);                                                            // [out, in]
            double err = approx.rsubi(w).norm2Number().doubleValue();
            double norm = w.norm2Number().doubleValue();
            error2 += err * err;
            norm2 += norm * norm;
        }
        if (biases && p == Projection.GATE) {
            INDArray gate = ExpertStack.readBiases(source, layout, layer, experts, Projection.GATE);   // [E, 1, I]
            INDArray up = ExpertStack.readBiases(source, layout, layer, experts, Projection.UP);       // [E, 1, I]
            INDArray gateUp = Nd4j.create(DataType.FLOAT, experts, 2 * gate.size(2));                 // [E, 2I]
            gateUp.get(NDArrayIndex.all(), NDArrayIndex.interval(0, 2, gateUp.size(1))).assign(gate.reshape(experts, -1));
            gateUp.get(NDArrayIndex.all(), NDArrayIndex.interval(1, 2, gateUp.size(1))).assign(up.reshape(experts, -1));
            out.put(FusedExperts.gateUpBias(layer), gateUp);
        } else if (biases && p == Projection.DOWN) {
            out.put(FusedExperts.downBias(layer),
                    ExpertStack.readBiases(source, layout, layer, experts, p).reshape(experts, -1));  // [E, D]
        }
        out.put(layout.sharedBase(layer, p), storedBase);
        out.put(layout.stackedLoraA(layer, p), a);
        out.put(layout.stackedLoraB(layer, p), b);
        String name = layout.projectionName(p);
        metrics.put(name + "_rel_error", Math.sqrt(error2 / norm2));
        metrics.put(name + "_params_before", (double) (experts * rows * cols));
        metrics.put(name + "_params_after", (double) (rows * cols + experts * rank * (rows + cols)));
        return new LayerResult(out, null, metrics);
    }

    /**
     * The largest projection's part, I·D = n elements: the float64 base, its stored float32 and that widened back,
     * one expert at a time (float32, float64, minus the base, and B·A + base for its error check), so 5 float64 n and
     * 2 float32 n; one {@link TruncatedSvd} (its float64 copy and workspace), the stacked factors E·R·(I + D) float32,
     * and one {@link ExpertStack}'s scratch. Temporaries are counted as if all alive (ND4J frees them at the garbage
     * collector's pace).
     */
    @Override
    public long partBytes(ModelConfig model) {
        long d = model.hidden_size;
        long i = model.expert_intermediate_size;
        long n = d * i;
        return Double.BYTES * (n + n + n + n + n) + TruncatedSvd.bytes(i, d, rank)
                + Float.BYTES * (n + n + (long) experts * rank * (d + i)) + ExpertStack.scratchBytes();
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        json.put(ModelConfig.LOW_RANK_FIELD, rank);
        return json;
    }
}
