package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.GroupedGemm;
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
 * materialised W_e) is its reference. The backward pass ({@link #backward}) gives the gradients of every factor
 * ({@code surgery lowrank --distill-steps}) and of x (a frozen base inside {@code train}'s backward). FLOAT or DOUBLE;
 * stateless per call: what the backward pass reads travels in the {@link Pass}.
 */
public final class CpExperts extends DecomposedExperts {
    private final CpFactors gate;   // w1: in D, out I
    private final CpFactors up;     // w3: in D, out I
    private final CpFactors down;   // w2: in I, out D

    public CpExperts(CpFactors gate, CpFactors up, CpFactors down, GroupedGemm gemm) {
        super("CP experts'", gate.expertCount(), gate.inSize(), gate.dataType(), gemm);
        long d = gate.inSize();
        long i = gate.outSize();
        int e = gate.expertCount();
        int r = gate.rank();
        check("w3 (up)", up, d, i, e, r, gate.dataType());
        check("w2 (down)", down, i, d, e, r, gate.dataType());
        this.gate = gate;
        this.up = up;
        this.down = down;
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

    /**
     * The forward's result and what {@link #backward} reads (all null for no routed rows); immutable once built.
     *
     * @param x           [T, D] the input
     * @param expertOfRow [N]
     * @param z1          [T, R] x·U_I1, likewise z3
     * @param p1          [N, R] z1[tokenOfRow] ⊙ U_N1[expertOfRow], likewise p3
     * @param h1          [N, I] p1·U_O1ᵀ, likewise h3
     * @param act         [N, I] silu(h1) ⊙ h3
     * @param z2          [N, R] act·U_I2
     * @param p2          [N, R] z2 ⊙ U_N2[expertOfRow]
     * @param ys          [N, D] p2·U_O2ᵀ
     * @param out         [T, D]
     */
    private record CpPass(Routes routes, INDArray x, int[] expertOfRow, INDArray z1, INDArray z3, INDArray p1,
                          INDArray p3, INDArray h1, INDArray h3, INDArray act, INDArray z2, INDArray p2, INDArray ys,
                          INDArray out) implements Pass {
    }

    /**
     * Floats per token of a forward pass's rank-space activations, which the backward reads: z1, z3 [T, R] and p1,
     * p3, z2, p2 [N, R] with N = K·T rows, so 2·R + 4·K·R (the [N, I] and [N, D] rows are the experts' as ever).
     */
    public static long factorFloatsPerToken(long topK, long rank) {
        return 2 * rank + 4 * topK * rank;
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        checkInput(x);
        int tokens = (int) x.size(0);
        RoutingPlan plan = routes.plan;
        if (plan.rows() == 0) {
            return new CpPass(routes, x, null, null, null, null, null, null, null, null, null, null, null,
                    Nd4j.zeros(dataType(), tokens, hidden()));
        }
        int[] expertOfRow = RowCombine.expertOfRow(plan);                                   // [N]
        INDArray z1 = x.mmul(gate.in());                                               // [T, R]
        INDArray p1 = scaled(gate, Nd4j.pullRows(z1, 1, plan.tokenOfRow), expertOfRow); // [N, R]
        INDArray h1 = p1.mmul(gate.out().transpose());                                 // [N, I]
        INDArray z3 = x.mmul(up.in());                                                 // [T, R]
        INDArray p3 = scaled(up, Nd4j.pullRows(z3, 1, plan.tokenOfRow), expertOfRow);  // [N, R]
        INDArray h3 = p3.mmul(up.out().transpose());                                   // [N, I]
        INDArray act = Activations.gated(GatedActivation.SWIGLU, h1, h3, workers);   // [N, I]
        INDArray z2 = act.mmul(down.in());                                             // [N, R]
        INDArray p2 = scaled(down, z2.dup(), expertOfRow);                             // [N, R]
        INDArray ys = p2.mmul(down.out().transpose());                                 // [N, D]
        return new CpPass(routes, x, expertOfRow, z1, z3, p1, p3, h1, h3, act, z2, p2, ys,
                RowCombine.combine(ys, routes, tokens, hidden(), dataType(), workers));
    }

    /**
     * The rows' rank-space vectors scaled in place by their experts' U_N rows.
     *
     * @param rows        [N, R] overwritten
     * @param expertOfRow [N]
     * @return rows ⊙ U_N[expertOfRow] [N, R]
     */
    private static INDArray scaled(CpFactors f, INDArray rows, int[] expertOfRow) {
        return rows.muli(Nd4j.pullRows(f.experts(), 1, expertOfRow));
    }

    /**
     * The reverse of the forward, its steps in reverse order, the factors' gradients in their shapes:
     * <pre>
     *   dys  = g·dOut[tokenOfRow], dL/dg = dOut[t]·ys[row]        [N, D]   the combine ({@link RowCombine})
     *   dU_O2 = dysᵀ·p2                                           [D, R]
     *   dp2  = dys·U_O2                                           [N, R]
     *   dU_N2[e] = Σ_{rows of e} dp2 ⊙ z2                         [E, R]
     *   dz2  = dp2 ⊙ U_N2[expertOfRow]                            [N, R]
     *   dU_I2 = actᵀ·dz2,  dact = dz2·U_I2ᵀ                       [I, R], [N, I]
     *   dh1, dh3 = swiglu'(h1, h3)·dact                           [N, I]
     *   per P in (w3, w1): dU_OP = dhPᵀ·pP, dpP = dhP·U_OP, dU_NP[e] = Σ_{rows of e} dpP ⊙ zP[tokenOfRow],
     *       dzP[t] = Σ_{rows of t} dpP ⊙ U_NP[expertOfRow]        [T, R]
     *       dU_IP = xᵀ·dzP                                        [D, R]
     *   dx   = dz1·U_I1ᵀ + dz3·U_I3ᵀ                              [T, D]   (not through the router)
     * </pre>
     * The factors' gradients come back in {@link ExpertGradients#cp()}; the LoRA ones are null.
     */
    @Override
    public ExpertGradients backward(Pass pass, INDArray dOut) {
        CpPass p = passOf(pass, CpPass.class);
        int tokens = (int) p.out().size(0);
        checkDOut(dOut, tokens);
        RoutingPlan plan = p.routes().plan;
        double[] dWeights = new double[plan.rows()];                                   // [T·K] pair order
        if (plan.rows() == 0) {
            return new ExpertGradients(Nd4j.zeros(dataType(), tokens, hidden()), dWeights, null, null, null,
                    new CpGradients(zerosLike(gate), zerosLike(up), zerosLike(down)), null);
        }
        INDArray dys = RowCombine.backward(dOut, p.ys(), p.routes(), dWeights, workers);   // [N, D]

        // down: ys = (z2 ⊙ U_N2[e])·U_O2ᵀ, z2 = act·U_I2
        Unexpanded d2 = unexpand(down, p.p2(), p.z2(), dys, p.expertOfRow(), plan.offsets);
        INDArray dIn2 = Nd4j.gemm(p.act(), d2.dz(), true, false);                     // [I, R]
        INDArray dAct = Nd4j.gemm(d2.dz(), down.in(), false, true);                  // [N, I]

        // act = silu(h1) ⊙ h3
        INDArray[] dh = Activations.gatedBackward(GatedActivation.SWIGLU, p.h1(), p.h3(), dAct, workers); // [N, I]

        // up, then gate: hP = (zP[tokenOfRow] ⊙ U_NP[e])·U_OPᵀ, zP = x·U_IP
        Unexpanded d3 = unexpand(up, p.p3(), Nd4j.pullRows(p.z3(), 1, plan.tokenOfRow), dh[1], p.expertOfRow(),
                plan.offsets);
        INDArray dz3 = RowCombine.sumByToken(d3.dz(), plan, tokens, workers);         // [T, R]
        INDArray dIn3 = Nd4j.gemm(p.x(), dz3, true, false);                           // [D, R]
        Unexpanded d1 = unexpand(gate, p.p1(), Nd4j.pullRows(p.z1(), 1, plan.tokenOfRow), dh[0], p.expertOfRow(),
                plan.offsets);
        INDArray dz1 = RowCombine.sumByToken(d1.dz(), plan, tokens, workers);         // [T, R]
        INDArray dIn1 = Nd4j.gemm(p.x(), dz1, true, false);                           // [D, R]
        INDArray dx = Nd4j.gemm(dz3, up.in(), false, true);                           // [T, D]
        Nd4j.gemm(dz1, gate.in(), dx, false, true, 1.0, 1.0);                         // dx += dz1·U_I1ᵀ
        return new ExpertGradients(dx, dWeights, null, null, null, new CpGradients(
                new CpFactors(d1.dExperts(), dIn1, d1.dOut()), new CpFactors(d3.dExperts(), dIn3, d3.dOut()),
                new CpFactors(d2.dExperts(), dIn2, d2.dOut())), null);
    }

    /**
     * The reverse of h = p·U_Oᵀ with p = zRows ⊙ U_N[expertOfRow].
     *
     * @param dExperts dL/dU_N [E, R]
     * @param dOut     dL/dU_O [out, R]
     * @param dz       dL/dzRows [N, R]
     */
    private record Unexpanded(INDArray dExperts, INDArray dOut, INDArray dz) {
    }

    /**
     * @param pRows       [N, R] the forward's p
     * @param zRows       [N, R] the forward's z per row
     * @param dh          [N, out]
     * @param expertOfRow [N]
     * @param offsets     [E + 1] expert e owns rows offsets[e]..offsets[e+1]−1
     */
    private static Unexpanded unexpand(CpFactors f, INDArray pRows, INDArray zRows, INDArray dh, int[] expertOfRow,
            int[] offsets) {
        INDArray dOut = Nd4j.gemm(dh, pRows, true, false);                            // [out, R]
        INDArray dp = Nd4j.gemm(dh, f.out(), false, false);                           // [N, R]
        INDArray dExperts = RowCombine.sumByExpert(dp.mul(zRows), offsets);          // [E, R]
        return new Unexpanded(dExperts, dOut, dp.muli(Nd4j.pullRows(f.experts(), 1, expertOfRow)));
    }

    private static CpFactors zerosLike(CpFactors f) {
        return new CpFactors(Nd4j.zerosLike(f.experts()), Nd4j.zerosLike(f.in()), Nd4j.zerosLike(f.out()));
    }
}
