package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * The E SwiGLU experts of one MoE layer in CP form ({@code surgery lowrank --form cp}): per projection P the factors
 * U_N [E, R], U_I [in, R], U_O [out, R] of {@link CpFactors}, so W_{P,e}·v = U_O·(U_N[e] ⊙ (U_Iᵀ·v)). A true MoE —
 * each routed expert's FFN runs on its token and the outputs are mixed — over the rows of the routing plan, never
 * building an expert's weight:
 * <pre>
 *   z1  = x·U_I1                              [T, R]   once per token (gate / w1)
 *   z3  = x·U_I3                              [T, R]   once per token (up / w3)
 *   h1  = (z1[tokenOfRow] ⊙ U_N1[expertOfRow])·U_O1ᵀ   [N, I]   N = T·K plan rows
 *   h3  = (z3[tokenOfRow] ⊙ U_N3[expertOfRow])·U_O3ᵀ   [N, I]
 *   act = silu(h1) ⊙ h3                       [N, I]
 *   z2  = act·U_I2                            [N, R]   (down / w2: its input differs per pair)
 *   ys  = (z2 ⊙ U_N2[expertOfRow])·U_O2ᵀ      [N, D]
 *   out[t] = Σ g·ys[row]                      [T, D]   the combine of {@link FullExperts}, the same summation order
 * </pre>
 * O(T·R·(2D + K·(3I + D))) multiply-adds against FullExperts' O(T·K·3·I·D). {@link CpExpertsNaive} (the
 * materialised W_e) is its reference. Inference only: the backward pass (for {@code --distill-steps} and
 * {@code train}) is not built and refuses in one line. FLOAT or DOUBLE; stateless per call.
 */
public final class CpExperts implements ExpertFfn {
    private final CpFactors gate;   // w1: in D, out I
    private final CpFactors up;     // w3: in D, out I
    private final CpFactors down;   // w2: in I, out D
    private final Workers workers;  // the GEMM's threads, for the SwiGLU and the combine

    public CpExperts(CpFactors gate, CpFactors up, CpFactors down, GroupedGemm gemm) {
        long d = gate.inSize();
        long i = gate.outSize();
        int e = gate.expertCount();
        int r = gate.rank();
        check("w3 (up)", up, d, i, e, r, gate.dataType());
        check("w2 (down)", down, i, d, e, r, gate.dataType());
        this.gate = gate;
        this.up = up;
        this.down = down;
        this.workers = gemm.workers();
    }

    private static void check(String name, CpFactors f, long in, long out, int e, int r, DataType dt) {
        if (f.inSize() != in || f.outSize() != out || f.expertCount() != e || f.rank() != r || f.dataType() != dt) {
            throw new IllegalArgumentException("CP factors of " + name + " must be in " + in + ", out " + out + ", E "
                    + e + ", R " + r + " " + dt + " like w1's, got in " + f.inSize() + ", out " + f.outSize() + ", E "
                    + f.expertCount() + ", R " + f.rank() + " " + f.dataType());
        }
    }

    /** w1 (gate), w3 (up), w2 (down) in that order (read-only use). */
    public CpFactors[] factors() {
        return new CpFactors[] {gate, up, down};
    }

    @Override
    public int experts() {
        return gate.expertCount();
    }

    @Override
    public int hidden() {
        return (int) gate.inSize();
    }

    @Override
    public DataType dataType() {
        return gate.dataType();
    }

    private record CpPass(INDArray out) implements Pass {
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        if (x.rank() != 2 || x.size(1) != hidden() || x.dataType() != dataType()) {
            throw new IllegalArgumentException("CP experts' input must be [T, " + hidden() + "] " + dataType()
                    + ", got " + Arrays.toString(x.shape()) + " " + x.dataType());
        }
        int tokens = (int) x.size(0);
        RoutingPlan plan = routes.plan;
        if (plan.rows() == 0) {
            return new CpPass(Nd4j.zeros(dataType(), tokens, hidden()));
        }
        int[] expertOfRow = RowCombine.expertOfRow(plan);                                       // [N]
        INDArray h1 = expand(gate, x.mmul(gate.in()), plan.tokenOfRow, expertOfRow);  // [N, I]
        INDArray h3 = expand(up, x.mmul(up.in()), plan.tokenOfRow, expertOfRow);      // [N, I]
        INDArray act = Activations.gated(GatedActivation.SWIGLU, h1, h3, workers);   // [N, I]
        INDArray ys = expand(down, act.mmul(down.in()), null, expertOfRow);           // [N, D]
        return new CpPass(RowCombine.combine(ys, routes, tokens, hidden(), dataType(), workers));
    }

    /**
     * (z[rowOf] ⊙ U_N[expertOfRow])·U_Oᵀ: the rows' rank-space vectors scaled by their experts' U_N rows, expanded.
     *
     * @param z           [T, R] per token (gathered by {@code rowOf}) or [N, R] per row ({@code rowOf} null)
     * @param expertOfRow [N]
     * @return [N, out]
     */
    private static INDArray expand(CpFactors f, INDArray z, int[] rowOf, int[] expertOfRow) {
        INDArray p = rowOf == null ? z : Nd4j.pullRows(z, 1, rowOf);                  // [N, R]
        p.muli(Nd4j.pullRows(f.experts(), 1, expertOfRow));                          // [N, R]
        return p.mmul(f.out().transpose());                                           // [N, out]
    }

    @Override
    public ExpertGradients backward(Pass pass, INDArray dOut) {
        throw new UnsupportedOperationException("the backward of CP-form experts (surgery lowrank --form cp) is not "
                + "built: such a model runs eval and logits, not train or --distill-steps");
    }
}
