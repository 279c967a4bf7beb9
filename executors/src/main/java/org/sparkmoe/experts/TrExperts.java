package org.sparkmoe.experts;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * The E SwiGLU experts of one MoE layer in tensor-ring form ({@code surgery lowrank --form tr}): per projection P the
 * cores of {@link TrFactors}, W_{P,e}[o, i] = trace(G_N[:, e, :]·G_I[:, i, :]·G_O[:, o, :]). A true MoE over the rows
 * of the routing plan, never building an expert's weight. For a projection with input v (per token for w1/w3, per
 * row for w2):
 * <pre>
 *   z   = v·Āi                             [·, r2·r3]   = Σ_i v(i)·G_I[:, i, :] as [r2, r3]
 *   A   = G_N[:, e, :]·z[row]              [N, r1, r3]  per plan row, e = its expert (batched [r1, r2]×[r2, r3])
 *   h   = A·Āo                             [N, out]     h(o) = trace(A·G_O[:, o, :])
 * </pre>
 * and the layer
 * <pre>
 *   h1 = P_gate(x), h3 = P_up(x)           z once per token: T·D·r2·r3 each
 *   act = silu(h1) ⊙ h3                    [N, I]
 *   ys  = P_down(act)                      z per row: N·I·r2·r3
 *   out[t] = Σ g·ys[row]                   [T, D]   the combine of {@link FullExperts}, the same summation order
 * </pre>
 * at O(T·(2·D·r2·r3 + K·(I·r2·r3 + 3·r1·r2·r3 + r1·r3·(2I + D)))) multiply-adds (N = T·K rows) against FullExperts'
 * O(T·K·3·I·D). {@link TrExpertsNaive} (the materialised W_e) is its reference. The backward pass ({@link #backward})
 * gives the gradients of every core ({@code surgery lowrank --distill-steps}) and of x (frozen experts inside
 * {@code train}'s backward). FLOAT or DOUBLE; stateless per call: what the backward pass reads travels in the
 * {@link Pass}.
 */
public final class TrExperts extends DecomposedExperts {
    private final TrFactors gate;   // w1: in D, out I
    private final TrFactors up;     // w3: in D, out I
    private final TrFactors down;   // w2: in I, out D

    public TrExperts(TrFactors gate, TrFactors up, TrFactors down, GroupedGemm gemm) {
        super("TR experts'", gate.expertCount(), gate.inSize(), gate.dataType(), gemm);
        long d = gate.inSize();
        long i = gate.outSize();
        check("w3 (up)", up, d, i, gate);
        check("w2 (down)", down, i, d, gate);
        this.gate = gate;
        this.up = up;
        this.down = down;
    }

    private static void check(String name, TrFactors f, long in, long out, TrFactors w1) {
        if (f.inSize() != in || f.outSize() != out || f.expertCount() != w1.expertCount() || f.r1() != w1.r1()
                || f.r2() != w1.r2() || f.r3() != w1.r3() || f.dataType() != w1.dataType()) {
            throw new IllegalArgumentException("TR cores of " + name + " must be in " + in + ", out " + out + ", E "
                    + w1.expertCount() + ", ranks " + ranks(w1) + " " + w1.dataType() + " like w1's, got in "
                    + f.inSize() + ", out " + f.outSize() + ", E " + f.expertCount() + ", ranks " + ranks(f) + " "
                    + f.dataType());
        }
    }

    private static String ranks(TrFactors f) {
        return "(" + f.r1() + ", " + f.r2() + ", " + f.r3() + ")";
    }

    /** w1 (gate), w3 (up), w2 (down) in that order (read-only use). */
    public TrFactors[] factors() {
        return new TrFactors[] {gate, up, down};
    }

    /**
     * The forward's result and what {@link #backward} reads (all null for no routed rows); immutable once built.
     *
     * @param x           [T, D] the input
     * @param expertOfRow [N]
     * @param z1          [T, r2·r3] x·Āi1, likewise z3
     * @param a1          [N, r1·r3] G_N1[:, e, :]·z1[tokenOfRow] per row, likewise a3
     * @param h1          [N, I] a1·Āo1, likewise h3
     * @param act         [N, I] silu(h1) ⊙ h3
     * @param z2          [N, r2·r3] act·Āi2
     * @param a2          [N, r1·r3] G_N2[:, e, :]·z2 per row
     * @param ys          [N, D] a2·Āo2
     * @param out         [T, D]
     */
    private record TrPass(Routes routes, INDArray x, int[] expertOfRow, INDArray z1, INDArray z3, INDArray a1,
                          INDArray a3, INDArray h1, INDArray h3, INDArray act, INDArray z2, INDArray a2, INDArray ys,
                          INDArray out) implements Pass {
    }

    /**
     * Floats per token of a forward pass's factor-space activations, which the backward reads, plus the temporaries
     * of one contraction: z1, z3 [T, r2·r3]; a1, a3, a2 [N, r1·r3] and z2 [N, r2·r3] with N = K·T rows; a
     * contraction's G_N slices [N, r1·r2] and input rows [N, r2·r3].
     */
    public static long factorFloatsPerToken(long topK, long r1, long r2, long r3) {
        return 2 * r2 * r3 + topK * (3 * r1 * r3 + 2 * r2 * r3 + r1 * r2);
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        checkInput(x);
        int tokens = (int) x.size(0);
        RoutingPlan plan = routes.plan;
        if (plan.rows() == 0) {
            return new TrPass(routes, x, null, null, null, null, null, null, null, null, null, null, null,
                    Nd4j.zeros(dataType(), tokens, hidden()));
        }
        int[] expertOfRow = RowCombine.expertOfRow(plan);                                     // [N]
        INDArray z1 = x.mmul(gate.inMatrix());                                               // [T, r2·r3]
        INDArray a1 = contracted(gate, rowsOf(gate, z1, plan.tokenOfRow), expertOfRow);    // [N, r1·r3]
        INDArray h1 = a1.mmul(gate.outMatrix());                                             // [N, I]
        INDArray z3 = x.mmul(up.inMatrix());                                                 // [T, r2·r3]
        INDArray a3 = contracted(up, rowsOf(up, z3, plan.tokenOfRow), expertOfRow);         // [N, r1·r3]
        INDArray h3 = a3.mmul(up.outMatrix());                                               // [N, I]
        INDArray act = Activations.gated(GatedActivation.SWIGLU, h1, h3, workers);          // [N, I]
        INDArray z2 = act.mmul(down.inMatrix());                                             // [N, r2·r3]
        INDArray a2 = contracted(down, rowsOf(down, z2, null), expertOfRow);                // [N, r1·r3]
        INDArray ys = a2.mmul(down.outMatrix());                                             // [N, D]
        return new TrPass(routes, x, expertOfRow, z1, z3, a1, a3, h1, h3, act, z2, a2, ys,
                RowCombine.combine(ys, routes, tokens, hidden(), dataType(), workers));
    }

    /**
     * The plan rows' input contractions as [r2, r3] matrices.
     *
     * @param z     [T, r2·r3] per token (gathered by {@code rowOf}) or [N, r2·r3] per row ({@code rowOf} null)
     * @param rowOf [N] the token of each row, or null
     * @return [N, r2, r3]
     */
    private static INDArray rowsOf(TrFactors f, INDArray z, int[] rowOf) {
        INDArray rows = rowOf == null ? z.dup('c') : Nd4j.pullRows(z, 1, rowOf, 'c');      // [N, r2·r3]
        return rows.reshape('c', rows.size(0), f.r2(), f.r3());
    }

    /**
     * The rows' experts' G_N slices.
     *
     * @param expertOfRow [N]
     * @return [N, r1, r2]
     */
    private static INDArray slicesOf(TrFactors f, int[] expertOfRow) {
        return Nd4j.pullRows(f.expertRows(), 1, expertOfRow, 'c').reshape('c', expertOfRow.length, f.r1(), f.r2());
    }

    /**
     * G_N[:, e, :]·p per row, N·r1·r2·r3 multiply-adds.
     *
     * @param p           [N, r2, r3]
     * @param expertOfRow [N]
     * @return [N, r1·r3]
     */
    private static INDArray contracted(TrFactors f, INDArray p, int[] expertOfRow) {
        return Nd4j.matmul(slicesOf(f, expertOfRow), p).reshape('c', expertOfRow.length, f.r1() * f.r3());
    }

    /**
     * The reverse of the forward, its steps in reverse order, the cores' gradients taken in their matrix layouts
     * (Ān [E, r1·r2], Āi [in, r2·r3], Āo [r1·r3, out]) and folded into the cores' shapes:
     * <pre>
     *   dys  = g·dOut[tokenOfRow], dL/dg = dOut[t]·ys[row]        [N, D]   the combine ({@link RowCombine})
     *   dĀo2 = a2ᵀ·dys                                            [r1·r3, D]
     *   da2  = dys·Āo2ᵀ                                           [N, r1, r3]
     *   dĀn2[e] = Σ_{rows of e} da2·p2ᵀ  (p2 = z2 as [r2, r3])     [E, r1·r2]
     *   dz2  = G_N2[:, e, :]ᵀ·da2 per row                         [N, r2·r3]
     *   dĀi2 = actᵀ·dz2,  dact = dz2·Āi2ᵀ                         [I, r2·r3], [N, I]
     *   dh1, dh3 = swiglu'(h1, h3)·dact                           [N, I]
     *   per P in (w3, w1): dĀoP = aPᵀ·dhP, daP = dhP·ĀoPᵀ, dĀnP[e] = Σ_{rows of e} daP·zP[tokenOfRow]ᵀ,
     *       dzP[t] = Σ_{rows of t} G_NP[:, e, :]ᵀ·daP             [T, r2·r3]
     *       dĀiP = xᵀ·dzP                                         [D, r2·r3]
     *   dx   = dz1·Āi1ᵀ + dz3·Āi3ᵀ                                [T, D]   (not through the router)
     * </pre>
     * The cores' gradients come back in {@link ExpertGradients#tr()}; the LoRA ones and the CP ones are null.
     */
    @Override
    public ExpertGradients backward(Pass pass, INDArray dOut) {
        TrPass p = passOf(pass, TrPass.class);
        int tokens = (int) p.out().size(0);
        checkDOut(dOut, tokens);
        RoutingPlan plan = p.routes().plan;
        double[] dWeights = new double[plan.rows()];                                         // [T·K] pair order
        if (plan.rows() == 0) {
            return new ExpertGradients(Nd4j.zeros(dataType(), tokens, hidden()), dWeights, null, null, null, null,
                    new TrGradients(zerosLike(gate), zerosLike(up), zerosLike(down)));
        }
        INDArray dys = RowCombine.backward(dOut, p.ys(), p.routes(), dWeights, workers);    // [N, D]

        // down: ys = (G_N2[:, e, :]·z2)·Āo2, z2 = act·Āi2
        Uncontracted d2 = uncontract(down, p.a2(), rowsOf(down, p.z2(), null), dys, p.expertOfRow(), plan.offsets);
        INDArray dIn2 = Nd4j.gemm(p.act(), d2.dz(), true, false);                           // [I, r2·r3]
        INDArray dAct = Nd4j.gemm(d2.dz(), down.inMatrix(), false, true);                  // [N, I]

        // act = silu(h1) ⊙ h3
        INDArray[] dh = Activations.gatedBackward(GatedActivation.SWIGLU, p.h1(), p.h3(), dAct, workers); // [N, I]

        // up, then gate: hP = (G_NP[:, e, :]·zP[tokenOfRow])·ĀoP, zP = x·ĀiP
        Uncontracted d3 = uncontract(up, p.a3(), rowsOf(up, p.z3(), plan.tokenOfRow), dh[1], p.expertOfRow(),
                plan.offsets);
        INDArray dz3 = RowCombine.sumByToken(d3.dz(), plan, tokens, workers);               // [T, r2·r3]
        INDArray dIn3 = Nd4j.gemm(p.x(), dz3, true, false);                                 // [D, r2·r3]
        Uncontracted d1 = uncontract(gate, p.a1(), rowsOf(gate, p.z1(), plan.tokenOfRow), dh[0], p.expertOfRow(),
                plan.offsets);
        INDArray dz1 = RowCombine.sumByToken(d1.dz(), plan, tokens, workers);               // [T, r2·r3]
        INDArray dIn1 = Nd4j.gemm(p.x(), dz1, true, false);                                 // [D, r2·r3]
        INDArray dx = Nd4j.gemm(dz3, up.inMatrix(), false, true);                           // [T, D]
        Nd4j.gemm(dz1, gate.inMatrix(), dx, false, true, 1.0, 1.0);                         // dx += dz1·Āi1ᵀ
        return new ExpertGradients(dx, dWeights, null, null, null, null, new TrGradients(
                cores(gate, d1, dIn1), cores(up, d3, dIn3), cores(down, d2, dIn2)));
    }

    /**
     * The reverse of h = a·Āo with a = G_N[:, e, :]·p per row.
     *
     * @param dExpertRows dL/dĀn [E, r1·r2]
     * @param dOutMatrix  dL/dĀo [r1·r3, out]
     * @param dz          dL/dp [N, r2·r3]
     */
    private record Uncontracted(INDArray dExpertRows, INDArray dOutMatrix, INDArray dz) {
    }

    /**
     * @param a           [N, r1·r3] the forward's a
     * @param p           [N, r2, r3] the forward's input contractions per row
     * @param dh          [N, out]
     * @param expertOfRow [N]
     * @param offsets     [E + 1] expert e owns rows offsets[e]..offsets[e+1]−1
     */
    private static Uncontracted uncontract(TrFactors f, INDArray a, INDArray p, INDArray dh, int[] expertOfRow,
            int[] offsets) {
        int rows = expertOfRow.length;
        INDArray dOutMatrix = Nd4j.gemm(a, dh, true, false);                                 // [r1·r3, out]
        INDArray da = Nd4j.gemm(dh, f.outMatrix(), false, true).reshape('c', rows, f.r1(), f.r3()); // [N, r1, r3]
        INDArray dSlices = Nd4j.matmul(da, p, false, true, false)
                .reshape('c', rows, f.r1() * f.r2());                                         // [N, r1·r2]
        INDArray dz = Nd4j.matmul(slicesOf(f, expertOfRow), da, true, false, false)
                .reshape('c', rows, f.r2() * f.r3());                                         // [N, r2·r3]
        return new Uncontracted(RowCombine.sumByExpert(dSlices, offsets), dOutMatrix, dz);
    }

    /** A projection's cores' gradients from its uncontraction and dL/dĀi, in the cores' shapes. */
    private static TrFactors cores(TrFactors f, Uncontracted d, INDArray dInMatrix) {
        return TrFactors.ofMatrices(d.dExpertRows(), dInMatrix, d.dOutMatrix(), f.r1(), f.r3());
    }

    private static TrFactors zerosLike(TrFactors f) {
        return new TrFactors(Nd4j.zerosLike(f.experts()), Nd4j.zerosLike(f.in()), Nd4j.zerosLike(f.out()));
    }
}
