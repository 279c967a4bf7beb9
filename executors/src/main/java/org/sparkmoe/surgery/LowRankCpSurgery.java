package org.sparkmoe.surgery;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.ModelConfig.LowRankForm;

import java.util.List;

/**
 * Full experts → CP-form experts ({@code surgery lowrank --form cp}), an ALS surgery ({@link LowRankAlsSurgery}): per
 * MoE layer and projection P, the rank-R CP decomposition of the stacked experts W_P [E, out, in] by ALS
 * ({@link CpAls}, float64, streamed block by block), written as {@code <moe prefix>experts.<proj>.cp_n} [E, R],
 * {@code .cp_in} [in, R], {@code .cp_out} [out, R] with {@code low_rank_experts_form} = {@code cp}. Each expert is now
 * a row of U_N; its error is √(Σₑ‖W_e − U_O·diag(U_N[e])·U_Iᵀ‖²) / √(Σₑ‖W_e‖²), its parameters after
 * R·(E + out + in).
 */
public final class LowRankCpSurgery extends LowRankAlsSurgery {
    private static final long serialVersionUID = 1L;

    /**
     * @param iterations ALS sweeps at most per projection
     * @param tolerance  stop when the relative error changes by less than this between sweeps
     */
    public LowRankCpSurgery(ModelConfig model, int rank, int iterations, double tolerance, long seed) {
        super(model, LowRankForm.CP, rank, rankBound(model), iterations, tolerance, seed);
    }

    /** An exact CP exists at rank E·min(D, I). */
    private static RankBound rankBound(ModelConfig model) {
        return new RankBound((long) model.num_experts * Math.min(model.hidden_size, model.expert_intermediate_size),
                "num_experts " + model.num_experts + " × min of hidden_size " + model.hidden_size
                        + " and intermediate_size " + model.expert_intermediate_size
                        + ": an exact CP exists at that rank");
    }

    @Override
    AlsFit fit(ExpertStack stack, int iterations, double tolerance, long seed) {
        return CpAls.fit(stack, rank, iterations, tolerance, seed);
    }

    @Override
    List<String> tensorNames(CheckpointLayout layout, int layer, Projection p) {
        return List.of(layout.cpFactor(layer, p, CpFactor.EXPERTS), layout.cpFactor(layer, p, CpFactor.IN),
                layout.cpFactor(layer, p, CpFactor.OUT));
    }

    @Override
    double relativeError(ExpertStack stack, INDArray experts, INDArray in, INDArray out) {
        return CpAls.relativeError(stack, experts, in, out);
    }

    /** R. */
    @Override
    long rowWidth() {
        return rank;
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
}
