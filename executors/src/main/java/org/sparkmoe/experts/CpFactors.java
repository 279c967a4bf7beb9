package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One projection (in → out) of E experts in CP form, the rank-R CP decomposition of their stacked weights
 * W [E, out, in] (what {@code surgery lowrank --form cp} writes): W[e, o, i] = Σ_r U_N[e, r]·U_O[o, r]·U_I[i, r], so
 * expert e's weight is W_e = U_O·diag(U_N[e])·U_Iᵀ [out, in] and W_e·x = U_O·(U_N[e] ⊙ (U_Iᵀ·x)) — the μMoE CP layer
 * of {@code org.sparkmoe.mumoe} with a one-hot gate on expert e. FLOAT or DOUBLE, one type for the three.
 *
 * @param experts U_N [E, R]
 * @param in      U_I [in, R]
 * @param out     U_O [out, R]
 */
public record CpFactors(INDArray experts, INDArray in, INDArray out) {
    public CpFactors {
        if (experts.rank() != 2 || in.rank() != 2 || out.rank() != 2 || in.size(1) != experts.size(1)
                || out.size(1) != experts.size(1)) {
            throw new IllegalArgumentException("CP factors must be U_N [E, R], U_I [in, R], U_O [out, R] of one R, got "
                    + Arrays.toString(experts.shape()) + ", " + Arrays.toString(in.shape()) + ", "
                    + Arrays.toString(out.shape()));
        }
        DataType dt = experts.dataType();
        if ((dt != DataType.FLOAT && dt != DataType.DOUBLE) || in.dataType() != dt || out.dataType() != dt) {
            throw new IllegalArgumentException("CP factors must all be FLOAT or all DOUBLE, got " + dt + ", "
                    + in.dataType() + ", " + out.dataType());
        }
    }

    /** E. */
    public int expertCount() {
        return (int) experts.size(0);
    }

    /** R. */
    public int rank() {
        return (int) experts.size(1);
    }

    public long inSize() {
        return in.size(0);
    }

    public long outSize() {
        return out.size(0);
    }

    public DataType dataType() {
        return experts.dataType();
    }

    /** Expert e's weight W_e = U_O·diag(U_N[e])·U_Iᵀ [out, in], materialised (references and error checks). */
    public INDArray weight(int e) {
        INDArray scaled = out.mulRowVector(experts.getRow(e));                         // [out, R]
        return scaled.mmul(in.transpose());                                            // [out, in]
    }
}
