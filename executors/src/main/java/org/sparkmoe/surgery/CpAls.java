package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.Products;

/**
 * Rank-R CP decomposition of one projection's stacked experts W [E, out, in] by alternating least squares, in float64,
 * streaming the experts a block of rows at a time ({@link ExpertStack}: the tensor is never held widened):
 * W[e, o, i] ≈ Σ_r U_N[e, r]·U_O[o, r]·U_I[i, r]. One sweep updates each factor in turn to its least-squares
 * optimum given the other two (Kolda &amp; Bader, SIAM Review 2009, §3.4):
 * <pre>
 *   U_N ← M_N·(U_OᵀU_O ⊙ U_IᵀU_I)⁺    M_N[e, :] = Σ_o (W_e·U_I)[o, :] ⊙ U_O[o, :]       [E, R]
 *   U_O ← M_O·(U_NᵀU_N ⊙ U_IᵀU_I)⁺    M_O       = Σ_e (W_e·U_I) ⊙ U_N[e, :]            [out, R]
 *   U_I ← M_I·(U_NᵀU_N ⊙ U_OᵀU_O)⁺    M_I       = Σ_e W_eᵀ·(U_O ⊙ U_N[e, :])           [in, R]
 * </pre>
 * Each MTTKRP is one pass over W: per expert and block of rows [n, in], one [n, in]×[in, R] product (or its
 * transpose), E·out·in·R multiply-adds. The Grams are R×R; the pseudo-inverse is by symmetric eigendecomposition
 * (LAPACK syev), eigenvalues below 1e-12 of the largest dropped. U_N's and U_O's columns are normalised after their
 * updates (U_I, updated last, carries the scale); at the end each rank-one term's norm λ_r is shared equally, λ_r^(1/3)
 * per factor column. The fit after a sweep, ‖W − Ŵ‖²/‖W‖² = 1 − (2⟨M_I, U_I⟩ − 1ᵀ(U_NᵀU_N ⊙ U_OᵀU_O ⊙ U_IᵀU_I)1)/‖W‖²,
 * costs nothing more. The sweep loop, its stop rule ({@code maxIterations}, {@code tolerance}) and the Gaussian start
 * from {@code seed} are {@link AlsSweeps}'s.
 */
public final class CpAls {
    /** Relative eigenvalue cutoff of the Gram pseudo-inverse. */
    static final double RCOND = 1e-12;

    private CpAls() {
    }

    /**
     * @param w             the experts, E × [out, in]
     * @param rank          R ≥ 1
     * @param maxIterations sweeps at most, ≥ 1
     * @param tolerance     stop when the relative error changes by less than this between sweeps (0: never)
     * @return U_N [E, R], U_I [in, R], U_O [out, R] and how the fit went
     */
    public static AlsFit fit(ExpertStack w, int rank, int maxIterations, double tolerance, long seed) {
        AlsSweeps.checkArguments("CP-ALS", maxIterations, tolerance, rank);
        return new Sweeps(w, rank, seed).run(maxIterations, tolerance);
    }

    /** The factors U_N, U_O, U_I as they are swept. */
    private static final class Sweeps extends AlsSweeps {
        Sweeps(ExpertStack w, int rank, long seed) {
            super(w, seed, rank, rank, rank);
            normaliseColumns(n);
            normaliseColumns(o);
        }

        @Override
        double sweep(Temporaries t) {
            n = solve(t, mttkrpExperts(w, o, i), gram(o), gram(i));                        // [E, R]
            normaliseColumns(n);
            o = solve(t, mttkrpOut(w, n, i), gram(n), gram(i));                            // [out, R]
            normaliseColumns(o);
            INDArray mi = t.add(mttkrpIn(w, n, o));                                        // [in, R]
            i = solve(t, mi, gram(n), gram(o));                                            // [in, R]
            double inner = t.add(mi.mul(i)).sumNumber().doubleValue();                     // ⟨W, Ŵ⟩
            double model = t.add(t.add(t.add(gram(n)).muli(t.add(gram(o)))).muli(t.add(gram(i))))
                    .sumNumber().doubleValue();                                            // ‖Ŵ‖²
            return errorOf(inner, model);
        }

        @Override
        AlsFit finish(int sweeps, double relError) {
            balance(n, o, i);
            return new AlsFit(n, i, o, sweeps, relError);
        }
    }

    /**
     * ‖W − Ŵ‖_F / ‖W‖_F of the given factors (e.g. the float32 ones stored), by a direct pass: per expert and block,
     * W_block − U_O[block]·diag(U_N[e])·U_Iᵀ in float64.
     */
    public static double relativeError(ExpertStack w, INDArray experts, INDArray in, INDArray out) {
        INDArray n = experts.castTo(DataType.DOUBLE);
        INDArray it = in.castTo(DataType.DOUBLE).transpose();                              // [R, in]
        INDArray o = out.castTo(DataType.DOUBLE);
        double err2 = 0;
        double norm2 = 0;
        for (int e = 0; e < w.experts(); e++) {
            try (Temporaries perExpert = new Temporaries()) {
                INDArray scaled = perExpert.add(o.mulRowVector(n.getRow(e)));              // [out, R]
                for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                    long r1 = Math.min(w.rows(), r0 + w.rowsPerBlock());
                    try (Temporaries t = new Temporaries()) {
                        INDArray block = t.add(w.rows(e, r0, r1).castTo(DataType.DOUBLE));      // [n, in]
                        INDArray approx = t.add(Products.times(
                                scaled.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all()), it));    // [n, in]
                        double b = block.norm2Number().doubleValue();
                        double d = block.subi(approx).norm2Number().doubleValue();
                        norm2 += b * b;
                        err2 += d * d;
                    }
                }
            }
        }
        return Math.sqrt(err2 / norm2);
    }

    /** M_N [E, R]: M_N[e, :] = Σ_o (W_e·U_I)[o, :] ⊙ U_O[o, :]. */
    static INDArray mttkrpExperts(ExpertStack w, INDArray o, INDArray i) {
        INDArray m = Nd4j.zeros(DataType.DOUBLE, w.experts(), i.size(1));
        for (int e = 0; e < w.experts(); e++) {
            for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                long r1 = Math.min(w.rows(), r0 + w.rowsPerBlock());
                try (Temporaries t = new Temporaries()) {
                    INDArray wi = t.add(Products.times(t.add(w.rows(e, r0, r1).castTo(DataType.DOUBLE)),
                            i));                                                                 // [n, R]
                    m.getRow(e).addi(t.add(wi.muli(o.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all()))
                            .sum(0)));
                }
            }
        }
        return m;
    }

    /** M_O [out, R] = Σ_e (W_e·U_I) ⊙ U_N[e, :]. */
    static INDArray mttkrpOut(ExpertStack w, INDArray n, INDArray i) {
        INDArray m = Nd4j.zeros(DataType.DOUBLE, w.rows(), i.size(1));
        for (int e = 0; e < w.experts(); e++) {
            for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                long r1 = Math.min(w.rows(), r0 + w.rowsPerBlock());
                try (Temporaries t = new Temporaries()) {
                    INDArray wi = t.add(Products.times(t.add(w.rows(e, r0, r1).castTo(DataType.DOUBLE)),
                            i));                                                                 // [n, R]
                    m.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all()).addi(wi.muliRowVector(n.getRow(e)));
                }
            }
        }
        return m;
    }

    /** M_I [in, R] = Σ_e W_eᵀ·(U_O ⊙ U_N[e, :]). */
    static INDArray mttkrpIn(ExpertStack w, INDArray n, INDArray o) {
        INDArray m = Nd4j.zeros(DataType.DOUBLE, w.cols(), o.size(1));
        for (int e = 0; e < w.experts(); e++) {
            try (Temporaries perExpert = new Temporaries()) {
                INDArray scaled = perExpert.add(o.mulRowVector(n.getRow(e)));              // [out, R]
                for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                    long r1 = Math.min(w.rows(), r0 + w.rowsPerBlock());
                    try (Temporaries t = new Temporaries()) {
                        INDArray block = t.add(w.rows(e, r0, r1).castTo(DataType.DOUBLE));      // [n, in]
                        m.addi(t.add(Products.times(block.transpose(), scaled.get(NDArrayIndex.interval(r0, r1),
                                NDArrayIndex.all()))));
                    }
                }
            }
        }
        return m;
    }

    /** M·(G1 ⊙ G2)⁺ [·, R], a new array; M, the Grams and the pseudo-inverse recorded in {@code t}. */
    private static INDArray solve(Temporaries t, INDArray m, INDArray g1, INDArray g2) {
        return Products.times(t.add(m), t.add(pinv(t.add(t.add(g1).muli(t.add(g2))))));
    }

    /** AᵀA [R, R]. */
    static INDArray gram(INDArray a) {
        return Products.times(a.transpose(), a);
    }

    /** The pseudo-inverse of a symmetric positive semi-definite G [R, R]: V·diag(1/λ)·Vᵀ over λ > RCOND·λ_max. */
    static INDArray pinv(INDArray g) {
        int r = (int) g.size(0);
        try (Temporaries t = new Temporaries()) {
            INDArray v = t.add(g.dup('f'));                                                // eigenvectors in columns
            INDArray lambda = t.add(Nd4j.create(DataType.DOUBLE, r));
            int info = Nd4j.getBlasWrapper().lapack().syev('V', 'U', v, lambda);
            if (info != 0) {
                throw new IllegalStateException("CP-ALS: LAPACK syev failed on a " + r + "×" + r + " Gram (info "
                        + info + ")");
            }
            double max = lambda.maxNumber().doubleValue();
            INDArray inverse = t.add(Nd4j.zeros(DataType.DOUBLE, r));
            for (int j = 0; j < r; j++) {
                double l = lambda.getDouble(j);
                inverse.putScalar(j, l > RCOND * max ? 1 / l : 0);
            }
            return Products.times(t.add(v.mulRowVector(inverse)), v.transpose());
        }
    }

    /** Every column to unit norm (a zero column stays zero). */
    private static void normaliseColumns(INDArray a) {
        INDArray norms = a.norm2(0);                                                        // [R]
        for (int j = 0; j < norms.length(); j++) {
            double c = norms.getDouble(j);
            norms.putScalar(j, c > 0 ? 1 / c : 0);
        }
        a.muliRowVector(norms);
    }

    /** Each rank-one term's norm shared equally among its three factor columns. */
    private static void balance(INDArray n, INDArray o, INDArray i) {
        INDArray nn = n.norm2(0);
        INDArray on = o.norm2(0);
        INDArray in = i.norm2(0);
        for (int j = 0; j < nn.length(); j++) {
            double lambda = nn.getDouble(j) * on.getDouble(j) * in.getDouble(j);
            double each = Math.cbrt(lambda);
            n.getColumn(j).muli(scale(each, nn.getDouble(j)));
            o.getColumn(j).muli(scale(each, on.getDouble(j)));
            i.getColumn(j).muli(scale(each, in.getDouble(j)));
        }
    }

    private static double scale(double target, double norm) {
        return norm > 0 ? target / norm : 0;
    }
}
