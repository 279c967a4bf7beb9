package org.sparkmoe.surgery;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.WeightStack;

/**
 * CP-ALS over a stack of experts read block by block: an exactly rank-R tensor is recovered, the blocks change no
 * factor beyond float64 summation order, the seed fixes the bits, the direct error pass agrees with the fit's own
 * error, and the MTTKRPs equal the dense unfolding products. E=4 experts of [9, 7] (out, in), R=3.
 */
class CpAlsTest {
    static final int E = 4;
    static final int OUT = 9;
    static final int IN = 7;
    static final int R = 3;

    /** W[e] = U_O·diag(U_N[e])·U_Iᵀ of Gaussian factors, stored in float32, as a stack of blocks of {@code block} elements. */
    static ExpertStack exactRank(long seed, long block) {
        Random rnd = new Random(seed);
        INDArray n = gaussian(rnd, E, R);
        INDArray i = gaussian(rnd, IN, R);
        INDArray o = gaussian(rnd, OUT, R);
        List<INDArray> experts = new ArrayList<>();
        for (int e = 0; e < E; e++) {
            experts.add(o.mulRowVector(n.getRow(e)).mmul(i.transpose()).castTo(DataType.FLOAT));   // [out, in]
        }
        return new ExpertStack(WeightStack.of(experts), block);
    }

    /** A generic stack (Gaussian entries: full multilinear rank), float32. */
    static ExpertStack generic(long seed, long block) {
        Random rnd = new Random(seed);
        List<INDArray> experts = new ArrayList<>();
        for (int e = 0; e < E; e++) {
            experts.add(gaussian(rnd, OUT, IN).castTo(DataType.FLOAT));
        }
        return new ExpertStack(WeightStack.of(experts), block);
    }

    static INDArray gaussian(Random rnd, long rows, long cols) {
        double[] v = new double[(int) (rows * cols)];
        for (int k = 0; k < v.length; k++) {
            v[k] = rnd.nextGaussian();
        }
        return Nd4j.create(v, new long[] {rows, cols}, DataType.DOUBLE);
    }

    @Test
    void recoversAnExactlyRankRTensor() {
        ExpertStack w = exactRank(1, 2 * IN);                                              // 2 rows per block
        AlsFit f = CpAls.fit(w, R, 150, 0, 7);
        assertTrue(f.relError() <= 1e-5, "fit's relative error " + f.relError());
        double direct = CpAls.relativeError(w, f.experts(), f.in(), f.out());
        assertTrue(direct <= 1e-5, "direct relative error of the float64 factors " + direct);
        assertArrayEquals(new long[] {E, R}, f.experts().shape());
        assertArrayEquals(new long[] {IN, R}, f.in().shape());
        assertArrayEquals(new long[] {OUT, R}, f.out().shape());
    }

    @Test
    void directErrorAgreesWithTheFitsOwnAndBalancingKeepsIt() {
        ExpertStack w = generic(2, 3 * IN);
        AlsFit f = CpAls.fit(w, R, 30, 0, 5);
        double direct = CpAls.relativeError(w, f.experts(), f.in(), f.out());
        assertTrue(f.relError() > 0.1, "a generic tensor is not rank 3: " + f.relError());
        assertEquals(f.relError(), direct, 1e-9, "the Gram formula after the last sweep vs the direct pass");
        INDArray nn = f.experts().norm2(0);
        INDArray on = f.out().norm2(0);
        INDArray in = f.in().norm2(0);
        for (int r = 0; r < R; r++) {
            assertEquals(nn.getDouble(r), on.getDouble(r), 1e-12 * nn.getDouble(r), "balanced column " + r);
            assertEquals(nn.getDouble(r), in.getDouble(r), 1e-12 * nn.getDouble(r), "balanced column " + r);
        }
    }

    @Test
    void blocksChangeNothingButSummationOrderAndTheSeedFixesTheBits() {
        AlsFit blocks = CpAls.fit(generic(3, 2 * IN), R, 20, 0, 11);
        AlsFit whole = CpAls.fit(generic(3, ExpertStack.BLOCK_ELEMENTS), R, 20, 0, 11);
        AlsFit again = CpAls.fit(generic(3, 2 * IN), R, 20, 0, 11);
        for (INDArray[] pair : new INDArray[][] {{blocks.experts(), whole.experts()}, {blocks.in(), whole.in()},
                {blocks.out(), whole.out()}}) {
            double scale = pair[1].amaxNumber().doubleValue();
            assertTrue(pair[0].sub(pair[1]).amaxNumber().doubleValue() <= 1e-9 * scale, "blocked vs whole");
        }
        assertEquals(blocks.experts(), again.experts(), "same seed, same bits");
        assertEquals(blocks.in(), again.in());
        assertEquals(blocks.out(), again.out());
        AlsFit other = CpAls.fit(generic(3, 2 * IN), R, 20, 0, 12);
        assertTrue(!blocks.in().equals(other.in()), "another seed, another start");
    }

    @Test
    void toleranceStopsEarly() {
        AlsFit f = CpAls.fit(generic(4, 2 * IN), R, 1000, 1e-6, 3);
        assertTrue(f.iterations() < 1000, "stopped after " + f.iterations() + " sweeps");
        assertTrue(f.iterations() >= 2, "one sweep has no change to measure");
    }

    @Test
    void mttkrpsEqualTheDenseUnfoldingProducts() {
        ExpertStack w = generic(5, 2 * IN);
        Random rnd = new Random(9);
        INDArray n = gaussian(rnd, E, R);
        INDArray o = gaussian(rnd, OUT, R);
        INDArray i = gaussian(rnd, IN, R);
        INDArray mn = Nd4j.zeros(DataType.DOUBLE, E, R);
        INDArray mo = Nd4j.zeros(DataType.DOUBLE, OUT, R);
        INDArray mi = Nd4j.zeros(DataType.DOUBLE, IN, R);
        for (int e = 0; e < E; e++) {                                                       // element by element
            INDArray we = w.expert(e).castTo(DataType.DOUBLE);
            for (int a = 0; a < OUT; a++) {
                for (int b = 0; b < IN; b++) {
                    double x = we.getDouble(a, b);
                    for (int r = 0; r < R; r++) {
                        mn.putScalar(e, r, mn.getDouble(e, r) + x * o.getDouble(a, r) * i.getDouble(b, r));
                        mo.putScalar(a, r, mo.getDouble(a, r) + x * n.getDouble(e, r) * i.getDouble(b, r));
                        mi.putScalar(b, r, mi.getDouble(b, r) + x * n.getDouble(e, r) * o.getDouble(a, r));
                    }
                }
            }
        }
        assertTrue(CpAls.mttkrpExperts(w, o, i).sub(mn).amaxNumber().doubleValue() <= 1e-12, "M_N");
        assertTrue(CpAls.mttkrpOut(w, n, i).sub(mo).amaxNumber().doubleValue() <= 1e-12, "M_O");
        assertTrue(CpAls.mttkrpIn(w, n, o).sub(mi).amaxNumber().doubleValue() <= 1e-12, "M_I");
    }

    @Test
    void pseudoInverseOfAGram() {
        INDArray a = gaussian(new Random(6), 10, 4);
        INDArray g = CpAls.gram(a);                                                          // [4, 4], full rank
        INDArray product = g.mmul(CpAls.pinv(g));
        assertTrue(product.sub(Nd4j.eye(4).castTo(DataType.DOUBLE)).amaxNumber().doubleValue() <= 1e-10, "G·G⁺ = 1");
        INDArray low = CpAls.gram(gaussian(new Random(7), 2, 4));                            // rank 2
        INDArray back = low.mmul(CpAls.pinv(low)).mmul(low);
        assertTrue(back.sub(low).amaxNumber().doubleValue() <= 1e-10, "G·G⁺·G = G for a singular G");
    }
}
