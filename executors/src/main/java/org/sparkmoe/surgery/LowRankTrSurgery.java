package org.sparkmoe.surgery;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.ModelConfig.LowRankForm;

import java.util.List;

/**
 * Full experts → TR-form experts ({@code surgery lowrank --form tr}), an ALS surgery ({@link LowRankAlsSurgery}): per
 * MoE layer and projection P, a tensor ring of ranks (R, R, R) through the stacked experts W_P [E, out, in] by ALS
 * ({@link TrAls}, float64, streamed block by block), written as {@code <moe prefix>experts.<proj>.tr_n} [R, E, R],
 * {@code .tr_in} [R, in, R], {@code .tr_out} [R, out, R] with {@code low_rank_experts_form} = {@code tr}. Each expert is
 * now a slice G_N[:, e, :]; its parameters after are R²·(E + out + in). The same models as {@link LowRankCpSurgery}.
 */
public final class LowRankTrSurgery extends LowRankAlsSurgery {
    private static final long serialVersionUID = 1L;

    /**
     * @param rank       R, every rank of the ring
     * @param iterations ALS sweeps at most per projection
     * @param tolerance  stop when the relative error changes by less than this between sweeps
     */
    public LowRankTrSurgery(ModelConfig model, int rank, int iterations, double tolerance, long seed) {
        super(model, LowRankForm.TR, rank, rankBound(model), iterations, tolerance, seed);
    }

    /** An exact tensor ring exists at rank max(E, D, I). */
    private static RankBound rankBound(ModelConfig model) {
        return new RankBound(Math.max(model.num_experts, Math.max(model.hidden_size, model.expert_intermediate_size)),
                "max of num_experts " + model.num_experts + ", hidden_size " + model.hidden_size
                        + " and intermediate_size " + model.expert_intermediate_size
                        + ": an exact tensor ring exists at that rank");
    }

    @Override
    AlsFit fit(ExpertStack stack, int iterations, double tolerance, long seed) {
        return TrAls.fit(stack, rank, rank, rank, iterations, tolerance, seed);
    }

    @Override
    List<String> tensorNames(CheckpointLayout layout, int layer, Projection p) {
        return List.of(layout.trCore(layer, p, TrCore.EXPERTS), layout.trCore(layer, p, TrCore.IN),
                layout.trCore(layer, p, TrCore.OUT));
    }

    @Override
    double relativeError(ExpertStack stack, INDArray experts, INDArray in, INDArray out) {
        return TrAls.relativeError(stack, experts, in, out);
    }

    /** R². */
    @Override
    long rowWidth() {
        return (long) rank * rank;
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
}
