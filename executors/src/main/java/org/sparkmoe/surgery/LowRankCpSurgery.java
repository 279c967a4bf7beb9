package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.train.Seeds;

import java.util.LinkedHashMap;

/**
 * Full experts → CP-form experts ({@code surgery lowrank --form cp}): per MoE layer and projection P, the rank-R CP
 * decomposition of the stacked experts W_P [E, out, in] by ALS ({@link CpAls}, float64, streamed block by block),
 * written as {@code <moe prefix>experts.<proj>.cp_n} [E, R], {@code .cp_in} [in, R], {@code .cp_out} [out, R]
 * (float32 until the writer casts them to the source's dtype) with {@code low_rank_experts_rank} = R and
 * {@code low_rank_experts_form} = {@code cp} in config.json. The router is kept: top-K over the same E experts, each
 * now a row of U_N. The initial factors are Gaussian from a seed derived from {@code --seed}, the layer and the
 * projection. Reports per projection the relative Frobenius error √(Σₑ‖W_e − U_O·diag(U_N[e])·U_Iᵀ‖²) / √(Σₑ‖W_e‖²)
 * of the stored float32 factors, the sweeps run, and the parameters before (E·out·in) and after (R·(E + out + in)).
 * One part per projection. Models with expert biases (gpt-oss) are refused.
 */
public final class LowRankCpSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    private final ModelConfig.ModelType type;
    private final int rank;
    private final int experts;
    private final int iterations;
    private final double tolerance;
    private final long seed;

    /**
     * @param iterations ALS sweeps at most per projection
     * @param tolerance  stop when the relative error changes by less than this between sweeps
     */
    public LowRankCpSurgery(ModelConfig model, int rank, int iterations, double tolerance, long seed) {
        checkModel(model, "cp");
        long max = (long) model.num_experts * Math.min(model.hidden_size, model.expert_intermediate_size);
        if (rank < 1 || rank > max) {
            throw new IllegalArgumentException("--rank must be in [1, " + max + "] for --form cp (num_experts "
                    + model.num_experts + " × min of hidden_size " + model.hidden_size + " and intermediate_size "
                    + model.expert_intermediate_size + ": an exact CP exists at that rank), got " + rank);
        }
        checkAls(iterations, tolerance);
        this.type = model.modelType;
        this.rank = rank;
        this.experts = model.num_experts;
        this.iterations = iterations;
        this.tolerance = tolerance;
        this.seed = seed;
    }

    /** What --form cp and tr convert: full experts without biases, no gated shared expert, not yet low-rank. */
    static void checkModel(ModelConfig model, String form) {
        if (model.num_experts == 0 || model.hasSharedExpertGate() || model.hasLowRankExperts()
                || model.clamped_experts) {
            throw new IllegalArgumentException("lowrank --form " + form + " needs a model with full experts without "
                    + "biases and no gated shared expert (mixtral, qwen3_moe, olmoe, glm4_moe, deepseek_v2, "
                    + "deepseek_v3), got model_type " + model.modelType.name().toLowerCase()
                    + (model.hasLowRankExperts() ? " already low-rank" : model.hasSharedExpertGate()
                    ? " with a gated shared expert" : model.clamped_experts ? " (expert biases)" : ""));
        }
    }

    /** --als-iterations ≥ 1 and --als-tolerance ≥ 0, shared by --form cp and tr. */
    static void checkAls(int iterations, double tolerance) {
        if (iterations < 1) {
            throw new IllegalArgumentException("--als-iterations must be ≥ 1, got " + iterations);
        }
        if (!(tolerance >= 0)) {
            throw new IllegalArgumentException("--als-tolerance must be ≥ 0, got " + tolerance);
        }
    }

    /** One part per projection (w1, w3, w2). */
    @Override
    public int parts() {
        return Projection.values().length;
    }

    @Override
    public LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(type);
        Projection p = Projection.values()[part];
        String name = layout.projectionName(p);
        ExpertStack stack = ExpertStack.of(source, layout, layer, experts, p);                    // E × [out, in]
        CpAls.Factors f = CpAls.fit(stack, rank, iterations, tolerance,
                Seeds.derive(seed, "lowrank-cp/layer/" + layer + "/" + name));
        INDArray n = f.experts().castTo(DataType.FLOAT);                                          // [E, R]
        INDArray in = f.in().castTo(DataType.FLOAT);                                              // [in, R]
        INDArray out = f.out().castTo(DataType.FLOAT);                                            // [out, R]
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put(layout.cpFactor(layer, p, CpFactor.EXPERTS), n);
        tensors.put(layout.cpFactor(layer, p, CpFactor.IN), in);
        tensors.put(layout.cpFactor(layer, p, CpFactor.OUT), out);
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        metrics.put(name + "_rel_error", CpAls.relativeError(stack, n, in, out));                // of what is stored
        metrics.put(name + "_als_sweeps", (double) f.iterations());
        metrics.put(name + "_params_before", (double) (experts * stack.rows() * stack.cols()));
        metrics.put(name + "_params_after", (double) (rank * (experts + stack.rows() + stack.cols())));
        return new LayerResult(tensors, null, metrics);
    }

    /**
     * One part's task at the largest projection, F = E + D + I factor rows: one float64 block of rows
     * ({@link ExpertStack#BLOCK_ELEMENTS}) and its [block rows, R] product, about ten float64 factor-sized arrays
     * (the three factors, an MTTKRP, a scaled U_O, the updated factor, their normalised and balanced copies) F·R each,
     * about eight R×R float64 Grams and eigendecompositions, the float32 factors F·R, and one {@link ExpertStack}'s
     * scratch. Temporaries are counted as if all alive.
     */
    @Override
    public long partBytes(ModelConfig model) {
        long f = (long) model.num_experts + model.hidden_size + model.expert_intermediate_size;
        long r = rank;
        return Double.BYTES * (ExpertStack.BLOCK_ELEMENTS + ExpertStack.BLOCK_ELEMENTS / Math.min(model.hidden_size,
                model.expert_intermediate_size) * r + 10 * f * r + 8 * r * r)
                + Float.BYTES * f * r + ExpertStack.scratchBytes();
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        json.put(ModelConfig.LOW_RANK_FIELD, rank);
        json.put(ModelConfig.LOW_RANK_FORM_FIELD, ModelConfig.LowRankForm.CP.id());
        return json;
    }
}
