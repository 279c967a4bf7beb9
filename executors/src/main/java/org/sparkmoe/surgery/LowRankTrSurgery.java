package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.train.Seeds;

import java.util.LinkedHashMap;

/**
 * Full experts → TR-form experts ({@code surgery lowrank --form tr}): per MoE layer and projection P, a tensor ring of
 * ranks (R, R, R) through the stacked experts W_P [E, out, in] by ALS ({@link TrAls}, float64, streamed block by
 * block), written as {@code <moe prefix>experts.<proj>.tr_n} [R, E, R], {@code .tr_in} [R, in, R], {@code .tr_out}
 * [R, out, R] (float32 until the writer casts them to the source's dtype) with {@code low_rank_experts_rank} = R and
 * {@code low_rank_experts_form} = {@code tr} in config.json. The router is kept: top-K over the same E experts, each
 * now a slice G_N[:, e, :]. The initial cores are Gaussian from a seed derived from {@code --seed}, the layer and the
 * projection. Reports per projection the relative Frobenius error √(Σₑ‖W_e − Ŵ_e‖²) / √(Σₑ‖W_e‖²) of the stored
 * float32 cores, the sweeps run, and the parameters before (E·out·in) and after (R²·(E + out + in)). One part per
 * projection; the same models as {@link LowRankCpSurgery}.
 */
public final class LowRankTrSurgery implements LayerSurgery {
    private static final long serialVersionUID = 1L;

    private final ModelConfig.ModelType type;
    private final int rank;
    private final int experts;
    private final int iterations;
    private final double tolerance;
    private final long seed;

    /**
     * @param rank       R, every rank of the ring
     * @param iterations ALS sweeps at most per projection
     * @param tolerance  stop when the relative error changes by less than this between sweeps
     */
    public LowRankTrSurgery(ModelConfig model, int rank, int iterations, double tolerance, long seed) {
        LowRankCpSurgery.checkModel(model, "tr");
        long max = Math.max(model.num_experts, Math.max(model.hidden_size, model.expert_intermediate_size));
        if (rank < 1 || rank > max) {
            throw new IllegalArgumentException("--rank must be in [1, " + max + "] for --form tr (max of num_experts "
                    + model.num_experts + ", hidden_size " + model.hidden_size + " and intermediate_size "
                    + model.expert_intermediate_size + ": an exact tensor ring exists at that rank), got " + rank);
        }
        LowRankCpSurgery.checkAls(iterations, tolerance);
        this.type = model.modelType;
        this.rank = rank;
        this.experts = model.num_experts;
        this.iterations = iterations;
        this.tolerance = tolerance;
        this.seed = seed;
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
        TrAls.Cores f = TrAls.fit(stack, rank, rank, rank, iterations, tolerance,
                Seeds.derive(seed, "lowrank-tr/layer/" + layer + "/" + name));
        INDArray n = f.experts().castTo(DataType.FLOAT);                                          // [R, E, R]
        INDArray in = f.in().castTo(DataType.FLOAT);                                              // [R, in, R]
        INDArray out = f.out().castTo(DataType.FLOAT);                                            // [R, out, R]
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put(layout.trCore(layer, p, TrCore.EXPERTS), n);
        tensors.put(layout.trCore(layer, p, TrCore.IN), in);
        tensors.put(layout.trCore(layer, p, TrCore.OUT), out);
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        metrics.put(name + "_rel_error", TrAls.relativeError(stack, n, in, out));                // of what is stored
        metrics.put(name + "_als_sweeps", (double) f.iterations());
        metrics.put(name + "_params_before", (double) (experts * stack.rows() * stack.cols()));
        metrics.put(name + "_params_after", (double) ((long) rank * rank * (experts + stack.rows() + stack.cols())));
        return new LayerResult(tensors, null, metrics);
    }

    /**
     * One part's task at the largest projection, F = E + D + I core rows of R² each: one float64 block of rows
     * ({@link ExpertStack#BLOCK_ELEMENTS}) and four [block rows, R²] arrays made from it (P, its ring-major copy, V,
     * the M_O rows), about ten float64 unfolded-core-sized arrays F·R² (the three cores, an MTTKRP, the updated core,
     * their folded and balanced copies), about twelve R⁴ float64 arrays (three Grams, the subchain Gram's two permuted
     * copies and product, the pseudo-inverse's eigenvectors and products), the float32 cores F·R², and one
     * {@link ExpertStack}'s scratch. Temporaries are counted as if all alive.
     */
    @Override
    public long partBytes(ModelConfig model) {
        long f = (long) model.num_experts + model.hidden_size + model.expert_intermediate_size;
        long r2 = (long) rank * rank;
        return Double.BYTES * (ExpertStack.BLOCK_ELEMENTS + 4 * ExpertStack.BLOCK_ELEMENTS
                / Math.min(model.hidden_size, model.expert_intermediate_size) * r2 + 10 * f * r2 + 12 * r2 * r2)
                + Float.BYTES * f * r2 + ExpertStack.scratchBytes();
    }

    @Override
    public ObjectNode config(ModelConfig original) {
        ObjectNode json = original.jsonCopy();
        json.put(ModelConfig.LOW_RANK_FIELD, rank);
        json.put(ModelConfig.LOW_RANK_FORM_FIELD, ModelConfig.LowRankForm.TR.id());
        return json;
    }
}
