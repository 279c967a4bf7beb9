package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.experts.TrFactors;
import org.sparkmoe.kernels.Products;

/**
 * Tensor-ring decomposition of one projection's stacked experts W [E, out, in] by alternating least squares, in
 * float64, streaming the experts a block of rows at a time ({@link ExpertStack}: the tensor is never held widened):
 * W[e, o, i] ≈ trace(G_N[:, e, :]·G_I[:, i, :]·G_O[:, o, :]) with G_N [r1, E, r2], G_I [r2, in, r3], G_O [r3, out, r1]
 * (Zhao et al., "Tensor Ring Decomposition", 2016, §3.2). The cores are held unfolded ({@link TrFactors#unfold}):
 * N̂ [E, r1·r2], Î [in, r2·r3], Ô [out, r3·r1]. A core C_k [a, j, b] enters the model linearly,
 * W[.., j, ..] = Σ_{a,b} C_k[a, j, b]·S[b, a] with S the product of the other two cores along the ring (the subchain),
 * so one sweep sets each core in turn to its least-squares optimum given the other two:
 * <pre>
 *   Ĉ_k ← M_k·H_k⁺                                    [n_k, a·b]
 *   M_k[j, (a, b)] = Σ W[.., j, ..]·S[b, a]           the MTTKRP analogue: one pass over W
 *   H_k[(a, b), (a', b')] = Σ_{c,c'} Γ_{k+1}[(b, c), (b', c')]·Γ_{k+2}[(c, a), (c', a')]     [a·b, a·b]
 *   Γ_m = Ĉ_mᵀĈ_m                                     [left·right, left·right], the core's Gram
 * </pre>
 * in the ring order N → I → O → N. Per expert e and block of n rows of W_e [n, in], with P = W_block·Î [n, r2·r3]:
 * <pre>
 *   M_N[e]      += (Σ_o P[o]·Ô[o])ᵀ                  one [r2, n·r3]×[n·r3, r1] product      n·r1·r2·r3
 *   M_O[block]  += G_N[:, e, :]·P[o] per row o       one [r1, r2]×[r2, n·r3] product        n·r1·r2·r3
 *   M_I         += W_blockᵀ·V,  V = {@link TrFactors#outRows}(Ô[block], G_N[:, e, :])   [in, r2·r3]
 * </pre>
 * each MTTKRP E·out·in·r2·r3 multiply-adds (the product P, or W_blockᵀ·V), three per sweep. H_k costs
 * r1²·r2²·r3² and its pseudo-inverse (eigenvalues below {@link CpAls#RCOND} of the largest dropped, as CP-ALS) is
 * (a·b)³. N̂ and Ô are scaled to unit Frobenius norm after their updates (Î, updated last, carries the scale); at the end
 * the scale is shared equally, ‖·‖^(1/3) per core. The fit after a sweep, ‖W − Ŵ‖²/‖W‖² =
 * 1 − (2⟨M_I, Î⟩ − ⟨Î·H_I, Î⟩)/‖W‖², costs nothing more. The sweep loop, its stop rule ({@code maxIterations},
 * {@code tolerance}) and the Gaussian start from {@code seed} are {@link AlsSweeps}'s, as for {@link CpAls}.
 */
public final class TrAls {
    private TrAls() {
    }

    /**
     * @param w             the experts, E × [out, in]
     * @param r1            the rank between G_O and G_N, ≥ 1
     * @param r2            the rank between G_N and G_I, ≥ 1
     * @param r3            the rank between G_I and G_O, ≥ 1
     * @param maxIterations sweeps at most, ≥ 1
     * @param tolerance     stop when the relative error changes by less than this between sweeps (0: never)
     * @return G_N [r1, E, r2], G_I [r2, in, r3], G_O [r3, out, r1] and how the fit went
     */
    public static AlsFit fit(ExpertStack w, int r1, int r2, int r3, int maxIterations, double tolerance, long seed) {
        AlsSweeps.checkArguments("TR-ALS", maxIterations, tolerance, r1, r2, r3);
        return new Sweeps(w, r1, r2, r3, seed).run(maxIterations, tolerance);
    }

    /** The unfolded cores N̂ [E, (a, b)], Ô [out, (c, a)], Î [in, (b, c)] as they are swept. */
    private static final class Sweeps extends AlsSweeps {
        private final long r1;
        private final long r2;
        private final long r3;

        Sweeps(ExpertStack w, long r1, long r2, long r3, long seed) {
            super(w, seed, r1 * r2, r3 * r1, r2 * r3);
            this.r1 = r1;
            this.r2 = r2;
            this.r3 = r3;
            normalise(n);
            normalise(o);
        }

        @Override
        double sweep(Temporaries t) {
            n = Products.times(t.add(mttkrpExperts(w, i, o, r1, r2, r3)),
                    t.add(CpAls.pinv(subchainGram(t, gram(t, i), gram(t, o), r1, r2, r3))));  // [E, r1·r2]
            normalise(n);
            o = Products.times(t.add(mttkrpOut(w, n, i, r1, r2, r3)),
                    t.add(CpAls.pinv(subchainGram(t, gram(t, n), gram(t, i), r3, r1, r2))));  // [out, r3·r1]
            normalise(o);
            INDArray mi = t.add(mttkrpIn(w, n, o, r1, r2, r3));                          // [in, r2·r3]
            INDArray h = subchainGram(t, gram(t, o), gram(t, n), r2, r3, r1);            // [r2·r3, r2·r3]
            i = Products.times(mi, t.add(CpAls.pinv(h)));                                // [in, r2·r3]
            double inner = t.add(mi.mul(i)).sumNumber().doubleValue();                   // ⟨W, Ŵ⟩
            double model = t.add(Products.times(i, h)).muli(i).sumNumber().doubleValue(); // ‖Ŵ‖²
            return errorOf(inner, model);
        }

        @Override
        AlsFit finish(int sweeps, double relError) {
            balance(n, o, i);
            return new AlsFit(fold(n, r1, r2), fold(i, r2, r3), fold(o, r3, r1), sweeps, relError);
        }
    }

    /**
     * ‖W − Ŵ‖_F / ‖W‖_F of the given cores (e.g. the float32 ones stored), by a direct pass: per expert and block,
     * W_block − V_block·Îᵀ in float64 ({@link TrFactors#outRows}).
     */
    public static double relativeError(ExpertStack w, INDArray experts, INDArray in, INDArray out) {
        INDArray n = TrFactors.unfold(experts.castTo(DataType.DOUBLE));                    // [E, r1·r2]
        INDArray it = TrFactors.unfold(in.castTo(DataType.DOUBLE)).transpose();            // [r2·r3, in]
        INDArray o = TrFactors.unfold(out.castTo(DataType.DOUBLE));                        // [out, r3·r1]
        long r1 = experts.size(0);
        long r2 = experts.size(2);
        double err2 = 0;
        double norm2 = 0;
        for (int e = 0; e < w.experts(); e++) {
            INDArray slice = n.getRow(e).reshape('c', r1, r2);                              // G_N[:, e, :]
            for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                long rEnd = Math.min(w.rows(), r0 + w.rowsPerBlock());
                try (Temporaries t = new Temporaries()) {
                    INDArray block = t.add(w.rows(e, r0, rEnd).castTo(DataType.DOUBLE));   // [n, in]
                    INDArray approx = t.add(Products.times(t.add(TrFactors.outRows(rows(o, r0, rEnd), slice)),
                            it));                                                                // [n, in]
                    double b = block.norm2Number().doubleValue();
                    double d = block.subi(approx).norm2Number().doubleValue();
                    norm2 += b * b;
                    err2 += d * d;
                }
            }
        }
        return Math.sqrt(err2 / norm2);
    }

    /** M_N [E, r1·r2]: M_N[e, (a, b)] = Σ_{o,i} W[e, o, i]·Σ_c G_I[b, i, c]·G_O[c, o, a]. */
    static INDArray mttkrpExperts(ExpertStack w, INDArray i, INDArray o, long r1, long r2, long r3) {
        INDArray m = Nd4j.zeros(DataType.DOUBLE, w.experts(), r1 * r2);
        for (int e = 0; e < w.experts(); e++) {
            for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                long rEnd = Math.min(w.rows(), r0 + w.rowsPerBlock());
                long rows = rEnd - r0;
                try (Temporaries t = new Temporaries()) {
                    INDArray p = ringMajor(t, t.add(Products.times(
                                    t.add(w.rows(e, r0, rEnd).castTo(DataType.DOUBLE)), i)),
                            r2, r3);                                                        // [r2, n·r3]
                    INDArray x = t.add(Products.times(p,
                            t.add(rows(o, r0, rEnd).dup('c')).reshape('c', rows * r3, r1)));     // [b, a]
                    m.getRow(e).addi(t.add(x.transpose().dup('c')).reshape(r1 * r2));
                }
            }
        }
        return m;
    }

    /** M_O [out, r3·r1]: M_O[o, (c, a)] = Σ_{e,i} W[e, o, i]·Σ_b G_N[a, e, b]·G_I[b, i, c]. */
    static INDArray mttkrpOut(ExpertStack w, INDArray n, INDArray i, long r1, long r2, long r3) {
        INDArray m = Nd4j.zeros(DataType.DOUBLE, w.rows(), r3 * r1);
        for (int e = 0; e < w.experts(); e++) {
            INDArray slice = n.getRow(e).reshape('c', r1, r2);                              // G_N[:, e, :] [a, b]
            for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                long rEnd = Math.min(w.rows(), r0 + w.rowsPerBlock());
                long rows = rEnd - r0;
                try (Temporaries t = new Temporaries()) {
                    INDArray p = ringMajor(t, t.add(Products.times(
                                    t.add(w.rows(e, r0, rEnd).castTo(DataType.DOUBLE)), i)),
                            r2, r3);                                                        // [r2, n·r3]
                    INDArray moved = t.add(t.add(Products.times(slice, p)).reshape('c', r1, rows, r3).permute(1, 2, 0)
                            .dup('c')).reshape('c', rows, r3 * r1);                         // [o, (c, a)]
                    rows(m, r0, rEnd).addi(moved);
                }
            }
        }
        return m;
    }

    /** M_I [in, r2·r3]: M_I[i, (b, c)] = Σ_{e,o} W[e, o, i]·Σ_a G_O[c, o, a]·G_N[a, e, b]. */
    static INDArray mttkrpIn(ExpertStack w, INDArray n, INDArray o, long r1, long r2, long r3) {
        INDArray m = Nd4j.zeros(DataType.DOUBLE, w.cols(), r2 * r3);
        for (int e = 0; e < w.experts(); e++) {
            INDArray slice = n.getRow(e).reshape('c', r1, r2);
            for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                long rEnd = Math.min(w.rows(), r0 + w.rowsPerBlock());
                try (Temporaries t = new Temporaries()) {
                    INDArray v = t.add(TrFactors.outRows(rows(o, r0, rEnd), slice));         // [n, r2·r3]
                    m.addi(t.add(Products.times(t.add(w.rows(e, r0, rEnd).castTo(DataType.DOUBLE)).transpose(), v)));
                }
            }
        }
        return m;
    }

    /** P [n, r2·r3] with rows (o; b, c) → [r2, n·r3] with rows b and columns (o, c). */
    private static INDArray ringMajor(Temporaries t, INDArray p, long r2, long r3) {
        long rows = p.size(0);
        return t.add(p.reshape('c', rows, r2, r3).permute(1, 0, 2).dup('c')).reshape('c', r2, rows * r3);
    }

    /** Rows r0..r1−1 of a matrix (a view). */
    private static INDArray rows(INDArray a, long r0, long r1) {
        return a.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all());
    }

    /** Γ = ĈᵀĈ of an unfolded core, recorded in {@code t}. */
    static INDArray gram(Temporaries t, INDArray unfolded) {
        return t.add(Products.times(unfolded.transpose(), unfolded));
    }

    /**
     * H_k [ra·rb, ra·rb] of core k [ra, n, rb] from the Grams of the next two cores along the ring,
     * next [rb, ·, rc] and after [rc, ·, ra]: H[(a, b), (a', b')] = Σ_{c,c'} Γ_next[(b, c), (b', c')]·
     * Γ_after[(c, a), (c', a')], one [rb², rc²]×[rc², ra²] product.
     */
    static INDArray subchainGram(Temporaries t, INDArray next, INDArray after, long ra, long rb, long rc) {
        INDArray x = t.add(next.reshape('c', rb, rc, rb, rc).permute(0, 2, 1, 3).dup('c'))
                .reshape('c', rb * rb, rc * rc);
        INDArray y = t.add(after.reshape('c', rc, ra, rc, ra).permute(0, 2, 1, 3).dup('c'))
                .reshape('c', rc * rc, ra * ra);
        return t.add(t.add(Products.times(x, y)).reshape('c', rb, rb, ra, ra).permute(2, 0, 3, 1).dup('c'))
                .reshape('c', ra * rb, ra * rb);                                             // [(a, b), (a', b')]
    }

    /** An unfolded core [n, left·right] back to [left, n, right]. */
    private static INDArray fold(INDArray unfolded, long left, long right) {
        return unfolded.reshape('c', unfolded.size(0), left, right).permute(1, 0, 2).dup('c');
    }

    /** To unit Frobenius norm (zero stays zero). */
    private static void normalise(INDArray a) {
        double norm = a.norm2Number().doubleValue();
        if (norm > 0) {
            a.divi(norm);
        }
    }

    /** The ring's scale λ = ‖N̂‖·‖Ô‖·‖Î‖ shared equally, λ^(1/3) per core. */
    private static void balance(INDArray n, INDArray o, INDArray i) {
        double nn = n.norm2Number().doubleValue();
        double on = o.norm2Number().doubleValue();
        double in = i.norm2Number().doubleValue();
        double each = Math.cbrt(nn * on * in);
        if (nn > 0 && on > 0 && in > 0) {
            n.muli(each / nn);
            o.muli(each / on);
            i.muli(each / in);
        }
    }
}
