package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.Routes;

/**
 * The TR-form experts (per-row contractions of the cores over the routing plan) against the reference that
 * materialises every expert's weights element by element and loops over tokens and slots, in float64 and float32,
 * alone and inside an MoE block; the matrix form of one weight against the ring's trace; the one-line errors; and the
 * backward against the materialised experts' dense gradients mapped to the cores.
 * Small shapes: E=8, ranks (3, 4, 2) (unequal, so a transposed layout cannot pass), D=6, I=7, T=9.
 */
class TrExpertsTest {
    static final int E = 8;
    static final int R1 = 3;
    static final int R2 = 4;
    static final int R3 = 2;
    static final int D = 6;
    static final int I = 7;
    static final int T = 9;

    /** G_N, G_I, G_O uniform in (−1, 1). */
    static TrFactors cores(Random rnd, DataType dt, long in, long out) {
        return new TrFactors(LowRankAdapters.uniform(rnd, dt, 1.0, R1, E, R2),
                LowRankAdapters.uniform(rnd, dt, 1.0, R2, in, R3),
                LowRankAdapters.uniform(rnd, dt, 1.0, R3, out, R1));
    }

    static TrFactors[] layer(DataType dt, long seed) {
        Random rnd = new Random(seed);
        return new TrFactors[] {cores(rnd, dt, D, I), cores(rnd, dt, D, I), cores(rnd, dt, I, D)};
    }

    @ParameterizedTest
    @CsvSource({"DOUBLE, 1, 1e-12", "DOUBLE, 2, 1e-12", "DOUBLE, 8, 1e-12", "FLOAT, 2, 1e-5", "FLOAT, 3, 1e-5"})
    void factorisedEqualsMaterialised(DataType dt, int k, double tolerance) {
        TrFactors[] f = layer(dt, 11 + k);
        INDArray x = LowRankAdapters.uniform(new Random(5), dt, 1.0, T, D);
        INDArray gate = LowRankAdapters.uniform(new Random(6), dt, 1.0, E, D);
        Routes routes = CpExpertsTest.route(x, gate, k);
        INDArray fast = new TrExperts(f[0], f[1], f[2], new Nd4jGroupedGemm()).forward(x, routes).out();
        INDArray naive = new TrExpertsNaive(f[0], f[1], f[2]).forward(x, routes);
        assertEquals(dt, fast.dataType());
        assertTrue(naive.amaxNumber().doubleValue() > 0.1, "the outputs are not trivially small: max |out| "
                + naive.amaxNumber());
        double diff = CpExpertsTest.relativeDiff(fast, naive);
        assertTrue(diff <= tolerance, "TR experts vs materialised, relative diff " + diff);
    }

    @Test
    void runsInsideTheMoeBlock() {
        TrFactors[] f = layer(DataType.DOUBLE, 3);
        INDArray x = LowRankAdapters.uniform(new Random(8), DataType.DOUBLE, 1.0, T, D);
        INDArray gate = LowRankAdapters.uniform(new Random(9), DataType.DOUBLE, 1.0, E, D);
        MoeBlock block = new MoeBlock(new Router(gate), RouterOptions.of(RoutingRule.softmaxTopK(2, true)),
                new TrExperts(f[0], f[1], f[2], new Nd4jGroupedGemm()), null);
        INDArray out = block.forward(x, 2).hidden();
        INDArray naive = new TrExpertsNaive(f[0], f[1], f[2]).forward(x, CpExpertsTest.route(x, gate, 2));
        assertTrue(CpExpertsTest.relativeDiff(out, naive) <= 1e-12, "block output vs materialised experts");
    }

    @Test
    void weightIsTheTraceOfTheRing() {
        TrFactors f = layer(DataType.DOUBLE, 4)[2];
        INDArray ring = slice(f.experts(), 3).mmul(slice(f.in(), 6)).mmul(slice(f.out(), 4));        // [r1, r1]
        double trace = 0;
        for (int a = 0; a < R1; a++) {
            trace += ring.getDouble(a, a);
        }
        assertEquals(trace, f.weight(3).getDouble(4, 6), 1e-14, "W[3, 4, 6] = trace(G_N[:,3,:]·G_I[:,6,:]·G_O[:,4,:])");
        assertEquals(trace, TrExpertsNaive.weight(f, 3).getDouble(4, 6), 1e-14, "the reference's weight");
        assertEquals(R1 * E * R2 + R2 * I * R3 + R3 * D * R1, f.parameters());
    }

    /** C[:, j, :] of a core [left, n, right]. */
    private static INDArray slice(INDArray core, int j) {
        return core.get(NDArrayIndex.all(), NDArrayIndex.point(j), NDArrayIndex.all());
    }

    @Test
    void mismatchedCoresAreRefusedInOneLine() {
        TrFactors[] f = layer(DataType.DOUBLE, 5);
        Exception e = assertThrows(IllegalArgumentException.class,
                () -> new TrExperts(f[0], f[1], f[1], new Nd4jGroupedGemm()));
        assertEquals("TR cores of w2 (down) must be in 7, out 6, E 8, ranks (3, 4, 2) DOUBLE like w1's, got in 6, "
                + "out 7, E 8, ranks (3, 4, 2) DOUBLE", e.getMessage());
        Exception ring = assertThrows(IllegalArgumentException.class, () -> new TrFactors(
                Nd4j.zeros(DataType.DOUBLE, R1, E, R2), Nd4j.zeros(DataType.DOUBLE, R2, D, R3),
                Nd4j.zeros(DataType.DOUBLE, R3, I, R2)));
        assertEquals("TR cores must be G_N [r1, E, r2], G_I [r2, in, r3], G_O [r3, out, r1] of one ring, got "
                + "[3, 8, 4], [4, 6, 2], [2, 7, 4]", ring.getMessage());
    }

    @ParameterizedTest
    @CsvSource({"DOUBLE, 1, 1e-12", "DOUBLE, 2, 1e-12", "DOUBLE, 8, 1e-12", "FLOAT, 2, 1e-4"})
    void backwardEqualsMaterialised(DataType dt, int k, double tolerance) {
        TrFactors[] f = layer(dt, 21 + k);
        INDArray x = LowRankAdapters.uniform(new Random(15), dt, 1.0, T, D);
        INDArray dOut = LowRankAdapters.uniform(new Random(17), dt, 1.0, T, D);
        Routes routes = CpExpertsTest.route(x, LowRankAdapters.uniform(new Random(16), dt, 1.0, E, D), k);
        TrExperts experts = new TrExperts(f[0], f[1], f[2], new Nd4jGroupedGemm());
        ExpertGradients fast = experts.backward(experts.forward(x, routes), dOut);
        ExpertGradients naive = new TrExpertsNaive(f[0], f[1], f[2]).backward(x, routes, dOut);
        assertTrue(fast.gate() == null && fast.up() == null && fast.down() == null && fast.cp() == null,
                "no LoRA or CP gradients");
        assertTrue(CpExpertsTest.relativeDiff(fast.dx(), naive.dx()) <= tolerance, "dx vs materialised");
        double[] dg = fast.dWeights();
        double[] dgNaive = naive.dWeights();
        for (int j = 0; j < dg.length; j++) {
            assertEquals(dgNaive[j], dg[j], tolerance * 10 * Math.max(1, Math.abs(dgNaive[j])), "dL/dg of pair " + j);
        }
        TrFactors[] a = {fast.tr().gate(), fast.tr().up(), fast.tr().down()};
        TrFactors[] b = {naive.tr().gate(), naive.tr().up(), naive.tr().down()};
        for (int p = 0; p < 3; p++) {
            assertTrue(b[p].experts().amaxNumber().doubleValue() > 0.1, "projection " + p + "'s dG_N is not ~0");
            assertArrayEquals(f[p].experts().shape(), a[p].experts().shape(), "projection " + p + ": dG_N's shape");
            assertArrayEquals(f[p].in().shape(), a[p].in().shape(), "projection " + p + ": dG_I's shape");
            assertArrayEquals(f[p].out().shape(), a[p].out().shape(), "projection " + p + ": dG_O's shape");
            assertTrue(CpExpertsTest.relativeDiff(a[p].experts(), b[p].experts()) <= tolerance, "projection " + p
                    + ": dG_N");
            assertTrue(CpExpertsTest.relativeDiff(a[p].in(), b[p].in()) <= tolerance, "projection " + p + ": dG_I");
            assertTrue(CpExpertsTest.relativeDiff(a[p].out(), b[p].out()) <= tolerance, "projection " + p + ": dG_O");
        }
    }

    @Test
    void backwardNeedsItsOwnPass() {
        TrFactors[] f = layer(DataType.DOUBLE, 6);
        TrExperts experts = new TrExperts(f[0], f[1], f[2], new Nd4jGroupedGemm());
        INDArray x = LowRankAdapters.uniform(new Random(8), DataType.DOUBLE, 1.0, T, D);
        ExpertFfn.Pass pass = experts.forward(x, CpExpertsTest.route(x, LowRankAdapters.uniform(new Random(9),
                DataType.DOUBLE, 1.0, E, D), 2));
        Exception e = assertThrows(IllegalArgumentException.class, () -> experts.backward(pass, x.getRows(0, 1)));
        assertEquals("dOut must be [9, 6] DOUBLE (T, D), got [2, 6] DOUBLE", e.getMessage());
        Exception other = assertThrows(IllegalArgumentException.class, () -> experts.backward(() -> x, x));
        assertTrue(other.getMessage().startsWith("TR experts' backward needs a pass from their forward"),
                other.getMessage());
    }
}
