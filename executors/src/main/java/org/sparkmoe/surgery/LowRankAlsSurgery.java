package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.ModelConfig.LowRankForm;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.train.Seeds;

import java.util.LinkedHashMap;
import java.util.List;

/**
 * Full experts → experts held as a decomposition of each projection's stacked weights fitted by ALS
 * ({@code surgery lowrank --form cp}: {@link LowRankCpSurgery}, {@code --form tr}: {@link LowRankTrSurgery}). Per MoE
 * layer and projection P (one part each) the form fits the stacked experts W_P [E, out, in] from a seed derived from
 * {@code --seed}, the layer and the projection, and its three factors are written float32 (until the writer casts them
 * to the source's dtype) with {@code low_rank_experts_rank} = R and {@code low_rank_experts_form} in config.json. The
 * router is kept: top-K over the same E experts. Reports per projection the relative Frobenius error
 * √(Σₑ‖W_e − Ŵ_e‖²) / √(Σₑ‖W_e‖²) of the stored float32 factors, the sweeps run, and the parameters before (E·out·in)
 * and after (E + out + in factor rows of {@link #rowWidth} each). Models with expert biases (gpt-oss), a gated shared
 * expert or low-rank experts are refused.
 */
abstract class LowRankAlsSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    private final LowRankForm form;
    private final ModelConfig.ModelType type;
    final int rank;   // R
    private final int experts;
    private final int iterations;
    private final double tolerance;
    private final long seed;

    /**
     * The largest --rank a form takes for a model, and why (for the refusal).
     *
     * @param max    the rank at which an exact decomposition exists
     * @param reason how {@code max} follows from the model's sizes
     */
    record RankBound(long max, String reason) {
    }

    /**
     * @param iterations ALS sweeps at most per projection
     * @param tolerance  stop when the relative error changes by less than this between sweeps
     */
    LowRankAlsSurgery(ModelConfig model, LowRankForm form, int rank, RankBound bound, int iterations,
            double tolerance, long seed) {
        checkModel(model, form);
        if (rank < 1 || rank > bound.max()) {
            throw new IllegalArgumentException("--rank must be in [1, " + bound.max() + "] for --form " + form.id()
                    + " (" + bound.reason() + "), got " + rank);
        }
        checkAls(iterations, tolerance);
        this.form = form;
        this.type = model.modelType;
        this.rank = rank;
        this.experts = model.num_experts;
        this.iterations = iterations;
        this.tolerance = tolerance;
        this.seed = seed;
    }

    /** What the ALS forms convert: full experts without biases, no gated shared expert, not yet low-rank. */
    private static void checkModel(ModelConfig model, LowRankForm form) {
        if (model.num_experts == 0 || model.hasSharedExpertGate() || model.hasLowRankExperts()
                || model.clamped_experts) {
            throw new IllegalArgumentException("lowrank --form " + form.id() + " needs a model with full experts "
                    + "without biases and no gated shared expert (mixtral, qwen3_moe, olmoe, glm4_moe, deepseek_v2, "
                    + "deepseek_v3), got model_type " + model.modelType.name().toLowerCase()
                    + (model.hasLowRankExperts() ? " already low-rank" : model.hasSharedExpertGate()
                    ? " with a gated shared expert" : model.clamped_experts ? " (expert biases)" : ""));
        }
    }

    /** --als-iterations ≥ 1 and --als-tolerance ≥ 0. */
    private static void checkAls(int iterations, double tolerance) {
        if (iterations < 1) {
            throw new IllegalArgumentException("--als-iterations must be ≥ 1, got " + iterations);
        }
        if (!(tolerance >= 0)) {
            throw new IllegalArgumentException("--als-tolerance must be ≥ 0, got " + tolerance);
        }
    }

    /** The form's ALS fit of one projection's stacked experts at rank {@link #rank}, from {@code seed}. */
    abstract AlsFit fit(ExpertStack stack, int iterations, double tolerance, long seed);

    /** The names the experts', the input's and the output's factors of projection p in layer l are written under. */
    abstract List<String> tensorNames(CheckpointLayout layout, int layer, Projection p);

    /** ‖W − Ŵ‖_F / ‖W‖_F of the given factors, in the form's layout, by a direct pass over the stack. */
    abstract double relativeError(ExpertStack stack, INDArray experts, INDArray in, INDArray out);

    /** The parameters of one factor row (of an expert, an output or an input). */
    abstract long rowWidth();

    /** One part per projection (w1, w3, w2). */
    @Override
    public final int parts() {
        return Projection.values().length;
    }

    @Override
    public final LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part) {
        CheckpointLayout layout = new CheckpointLayout(type);
        Projection p = Projection.values()[part];
        String name = layout.projectionName(p);
        ExpertStack stack = ExpertStack.of(source, layout, layer, experts, p);                    // E × [out, in]
        AlsFit f = fit(stack, iterations, tolerance,
                Seeds.derive(seed, "lowrank-" + form.id() + "/layer/" + layer + "/" + name));
        INDArray n = f.experts().castTo(DataType.FLOAT);
        INDArray in = f.in().castTo(DataType.FLOAT);
        INDArray out = f.out().castTo(DataType.FLOAT);
        List<String> names = tensorNames(layout, layer, p);
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put(names.get(0), n);
        tensors.put(names.get(1), in);
        tensors.put(names.get(2), out);
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        metrics.put(name + "_rel_error", relativeError(stack, n, in, out));                      // of what is stored
        metrics.put(name + "_als_sweeps", (double) f.iterations());
        metrics.put(name + "_params_before", (double) (experts * stack.rows() * stack.cols()));
        metrics.put(name + "_params_after", (double) (rowWidth() * (experts + stack.rows() + stack.cols())));
        return new LayerResult(tensors, null, metrics);
    }

    @Override
    public final ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        json.put(ModelConfig.LOW_RANK_FIELD, rank);
        json.put(ModelConfig.LOW_RANK_FORM_FIELD, form.id());
        return json;
    }
}
