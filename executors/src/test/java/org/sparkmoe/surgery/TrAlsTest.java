package org.sparkmoe.surgery;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.TrFactors;
import org.sparkmoe.kernels.WeightStack;

/**
 * TR-ALS over a stack of experts read block by block: an exactly TR-rank tensor is recovered, blocks change no core
 * beyond float64 summation order, the seed fixes the bits, the direct error pass agrees with the fit's own error, and
 * the three MTTKRPs and the subchain Gram equal their element-by-element sums. E=4 experts of [9, 7] (out, in), ranks
 * (2, 3, 2) — unequal, so a transposed index cannot pass.
 */
class TrAlsTest {
    static final int E = 4;
    static final int OUT = 9;
    static final int IN = 7;
    static final int R1 = 2;
    static final int R2 = 3;
    static final int R3 = 2;

    /** Gaussian cores G_N [r1, E, r2], G_I [r2, in, r3], G_O [r3, out, r1] (float64). */
    static TrFactors cores(long seed) {
        Random rnd = new Random(seed);
        return new TrFactors(gaussian(rnd, R1, E, R2), gaussian(rnd, R2, IN, R3), gaussian(rnd, R3, OUT, R1));
    }

    /** W[e] = the ring's weight of Gaussian cores, stored in float32, as a stack of blocks of {@code block} elements. */
    static ExpertStack exactRank(long seed, long block) {
        TrFactors f = cores(seed);
        List<INDArray> experts = new ArrayList<>();
        for (int e = 0; e < E; e++) {
            experts.add(f.weight(e).castTo(DataType.FLOAT));                                     // [out, in]
        }
        return new ExpertStack(WeightStack.of(experts), block);
    }

    static INDArray gaussian(Random rnd, long... shape) {
        double[] v = new double[(int) (shape[0] * shape[1] * shape[2])];
        for (int k = 0; k < v.length; k++) {
            v[k] = rnd.nextGaussian();
        }
        return org.nd4j.linalg.factory.Nd4j.create(v, shape, DataType.DOUBLE);
    }

    @Test
    void recoversAnExactlyTrRankTensor() {
        ExpertStack w = exactRank(1, 2 * IN);                                                     // 2 rows per block
        AlsFit f = TrAls.fit(w, R1, R2, R3, 300, 1e-12, 7);
        assertTrue(f.relError() <= 1e-5, "fit's relative error " + f.relError() + " after " + f.iterations()
                + " sweeps");
        double direct = TrAls.relativeError(w, f.experts(), f.in(), f.out());
        assertTrue(direct <= 1e-5, "direct relative error of the float64 cores " + direct);
        assertArrayEquals(new long[] {R1, E, R2}, f.experts().shape());
        assertArrayEquals(new long[] {R2, IN, R3}, f.in().shape());
        assertArrayEquals(new long[] {R3, OUT, R1}, f.out().shape());
    }

    @Test
    void directErrorAgreesWithTheFitsOwnAndBalancingKeepsIt() {
        ExpertStack w = CpAlsTest.generic(2, 3 * IN);
        AlsFit f = TrAls.fit(w, R1, R2, R3, 30, 0, 5);
        double direct = TrAls.relativeError(w, f.experts(), f.in(), f.out());
        assertTrue(f.relError() > 0.1, "a generic tensor is not of TR rank (2, 3, 2): " + f.relError());
        assertEquals(f.relError(), direct, 1e-9, "the Gram formula after the last sweep vs the direct pass");
        double n = f.experts().norm2Number().doubleValue();
        assertEquals(n, f.in().norm2Number().doubleValue(), 1e-9 * n, "balanced: equal core norms");
        assertEquals(n, f.out().norm2Number().doubleValue(), 1e-9 * n, "balanced: equal core norms");
    }

    @Test
    void blocksChangeNothingButSummationOrderAndTheSeedFixesTheBits() {
        AlsFit whole = TrAls.fit(CpAlsTest.generic(3, OUT * IN), R1, R2, R3, 20, 0, 11);
        AlsFit rows = TrAls.fit(CpAlsTest.generic(3, IN), R1, R2, R3, 20, 0, 11);
        assertEquals(whole.relError(), rows.relError(), 1e-10, "one block vs a row per block");
        AlsFit again = TrAls.fit(CpAlsTest.generic(3, IN), R1, R2, R3, 20, 0, 11);
        assertEquals(rows.experts(), again.experts(), "same seed, same cores");
        assertEquals(rows.in(), again.in());
        assertEquals(rows.out(), again.out());
    }

    @Test
    void stopsWhenTheErrorSettles() {
        AlsFit f = TrAls.fit(CpAlsTest.generic(4, 3 * IN), R1, R2, R3, 1000, 1e-3, 3);
        assertTrue(f.iterations() < 1000, "sweeps " + f.iterations());
        assertEquals(1, TrAls.fit(CpAlsTest.generic(4, 3 * IN), R1, R2, R3, 1, 0, 3).iterations());
    }

    /** The unfolded cores of {@code cores(seed)} and W materialised as w[e][o][i]. */
    @Test
    void mttkrpsAndSubchainGramEqualTheirElementSums() {
        TrFactors f = cores(9);
        ExpertStack w = CpAlsTest.generic(6, 2 * IN);
        double[][][] dense = new double[E][][];
        for (int e = 0; e < E; e++) {
            dense[e] = w.expert(e).castTo(DataType.DOUBLE).toDoubleMatrix();
        }
        INDArray n = TrFactors.unfold(f.experts());
        INDArray i = TrFactors.unfold(f.in());
        INDArray o = TrFactors.unfold(f.out());
        INDArray mn = TrAls.mttkrpExperts(w, i, o, R1, R2, R3);
        INDArray mo = TrAls.mttkrpOut(w, n, i, R1, R2, R3);
        INDArray mi = TrAls.mttkrpIn(w, n, o, R1, R2, R3);
        INDArray gn = f.experts();
        INDArray gi = f.in();
        INDArray go = f.out();
        for (int a = 0; a < R1; a++) {
            for (int b = 0; b < R2; b++) {
                for (int c = 0; c < R3; c++) {
                    // one entry of each: M_N[1, (a, b)], M_O[5, (c, a)], M_I[4, (b, c)]
                    double sn = 0;
                    double so = 0;
                    double si = 0;
                    for (int e = 0; e < E; e++) {
                        for (int oo = 0; oo < OUT; oo++) {
                            for (int ii = 0; ii < IN; ii++) {
                                for (int x = 0; x < R3; x++) {
                                    if (e == 1 && c == 0) {
                                        sn += dense[e][oo][ii] * gi.getDouble(b, ii, x) * go.getDouble(x, oo, a);
                                    }
                                }
                                if (oo == 5) {
                                    for (int y = 0; y < R2; y++) {
                                        so += dense[e][oo][ii] * gn.getDouble(a, e, y) * gi.getDouble(y, ii, c);
                                    }
                                }
                                if (ii == 4) {
                                    for (int z = 0; z < R1; z++) {
                                        si += dense[e][oo][ii] * go.getDouble(c, oo, z) * gn.getDouble(z, e, b);
                                    }
                                }
                            }
                        }
                    }
                    if (c == 0) {
                        assertEquals(sn, mn.getDouble(1, a * R2 + b), 1e-10, "M_N[1, (" + a + ", " + b + ")]");
                    }
                    assertEquals(so, mo.getDouble(5, c * R1 + a), 1e-10, "M_O[5, (" + c + ", " + a + ")]");
                    assertEquals(si, mi.getDouble(4, b * R3 + c), 1e-10, "M_I[4, (" + b + ", " + c + ")]");
                }
            }
        }
        // H_N[(a, b), (a', b')] = Σ_{i,o} S[b, a]·S[b', a'] with S = G_I[:, i, :]·G_O[:, o, :]
        Temporaries kept = new Temporaries();                                               // not closed: h is read below
        INDArray h = TrAls.subchainGram(kept, TrAls.gram(kept, i), TrAls.gram(kept, o), R1, R2, R3);
        int a = 1;
        int b = 2;
        int a2 = 0;
        int b2 = 1;
        double sum = 0;
        for (int ii = 0; ii < IN; ii++) {
            for (int oo = 0; oo < OUT; oo++) {
                double s = 0;
                double s2 = 0;
                for (int c = 0; c < R3; c++) {
                    s += gi.getDouble(b, ii, c) * go.getDouble(c, oo, a);
                    s2 += gi.getDouble(b2, ii, c) * go.getDouble(c, oo, a2);
                }
                sum += s * s2;
            }
        }
        assertEquals(sum, h.getDouble(a * R2 + b, a2 * R2 + b2), 1e-10, "H_N[(1, 2), (0, 1)]");
    }

    @Test
    void badArgumentsAreRefusedInOneLine() {
        Exception e = assertThrows(IllegalArgumentException.class,
                () -> TrAls.fit(CpAlsTest.generic(1, IN), 2, 0, 2, 10, 0, 1));
        assertEquals("TR-ALS needs ranks ≥ 1, iterations ≥ 1, tolerance ≥ 0, got (2, 0, 2), 10, 0.0", e.getMessage());
    }
}
