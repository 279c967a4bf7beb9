package org.sparkmoe.experts;

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
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.Routes;

/**
 * The CP-form experts (per-row factorised products over the routing plan) against the reference that materialises
 * every expert's weights and loops over tokens and slots, in float64 and float32, alone and inside an MoE block; and
 * the one-line errors; the backward against the materialised experts' dense gradients. Small shapes: E=8, R=5, D=6, I=7, T=9.
 */
class CpExpertsTest {
    static final int E = 8;
    static final int R = 5;
    static final int D = 6;
    static final int I = 7;
    static final int T = 9;

    /** U_N, U_I, U_O uniform in (−1, 1). */
    static CpFactors factors(Random rnd, DataType dt, long in, long out) {
        return new CpFactors(LowRankAdapters.uniform(rnd, dt, 1.0, E, R),
                LowRankAdapters.uniform(rnd, dt, 1.0, in, R), LowRankAdapters.uniform(rnd, dt, 1.0, out, R));
    }

    static CpFactors[] layer(DataType dt, long seed) {
        Random rnd = new Random(seed);
        return new CpFactors[] {factors(rnd, dt, D, I), factors(rnd, dt, D, I), factors(rnd, dt, I, D)};
    }

    static Routes route(INDArray x, INDArray gate, int k) {
        return new Router(gate).route(x.mmul(gate.transpose()), RoutingRule.softmaxTopK(k, true));
    }

    /** max |a − b| / max |b|. */
    static double relativeDiff(INDArray a, INDArray b) {
        double scale = Math.max(b.amaxNumber().doubleValue(), 1e-30);
        return a.castTo(DataType.DOUBLE).sub(b.castTo(DataType.DOUBLE)).amaxNumber().doubleValue() / scale;
    }

    @ParameterizedTest
    @CsvSource({"DOUBLE, 1, 1e-12", "DOUBLE, 2, 1e-12", "DOUBLE, 8, 1e-12", "FLOAT, 2, 1e-5", "FLOAT, 3, 1e-5"})
    void factorisedEqualsMaterialised(DataType dt, int k, double tolerance) {
        CpFactors[] f = layer(dt, 11 + k);
        INDArray x = LowRankAdapters.uniform(new Random(5), dt, 1.0, T, D);
        INDArray gate = LowRankAdapters.uniform(new Random(6), dt, 1.0, E, D);
        Routes routes = route(x, gate, k);
        INDArray fast = new CpExperts(f[0], f[1], f[2], new Nd4jGroupedGemm()).forward(x, routes).out();
        INDArray naive = new CpExpertsNaive(f[0], f[1], f[2]).forward(x, routes);
        assertTrue(naive.amaxNumber().doubleValue() > 0.1, "the outputs are not trivially small: max |out| "
                + naive.amaxNumber());
        double diff = relativeDiff(fast, naive);
        assertTrue(diff <= tolerance, "CP experts vs materialised, relative diff " + diff);
    }

    @Test
    void runsInsideTheMoeBlock() {
        CpFactors[] f = layer(DataType.DOUBLE, 3);
        INDArray x = LowRankAdapters.uniform(new Random(8), DataType.DOUBLE, 1.0, T, D);
        INDArray gate = LowRankAdapters.uniform(new Random(9), DataType.DOUBLE, 1.0, E, D);
        MoeBlock block = new MoeBlock(new Router(gate), RouterOptions.of(RoutingRule.softmaxTopK(2, true)),
                new CpExperts(f[0], f[1], f[2], new Nd4jGroupedGemm()), null);
        INDArray out = block.forward(x, 2).hidden();
        INDArray naive = new CpExpertsNaive(f[0], f[1], f[2]).forward(x, route(x, gate, 2));
        assertTrue(relativeDiff(out, naive) <= 1e-12, "block output vs materialised experts");
    }

    @Test
    void weightIsTheCpSumOfRankOneTerms() {
        CpFactors f = layer(DataType.DOUBLE, 4)[2];
        INDArray w = f.weight(3);                                                       // [D, I]
        double expected = 0;
        for (int r = 0; r < R; r++) {
            expected += f.experts().getDouble(3, r) * f.out().getDouble(4, r) * f.in().getDouble(6, r);
        }
        assertEquals(expected, w.getDouble(4, 6), 1e-14, "W[3, 4, 6] = Σ_r U_N[3,r]·U_O[4,r]·U_I[6,r]");
    }

    @Test
    void mismatchedFactorsAreRefusedInOneLine() {
        CpFactors[] f = layer(DataType.DOUBLE, 5);
        Exception e = assertThrows(IllegalArgumentException.class,
                () -> new CpExperts(f[0], f[1], f[1], new Nd4jGroupedGemm()));
        assertEquals("CP factors of w2 (down) must be in 7, out 6, E 8, R 5 DOUBLE like w1's, got in 6, out 7, E 8, "
                + "R 5 DOUBLE", e.getMessage());
        Exception rank = assertThrows(IllegalArgumentException.class, () -> new CpFactors(
                Nd4j.zeros(DataType.DOUBLE, E, R), Nd4j.zeros(DataType.DOUBLE, D, R + 1), Nd4j.zeros(DataType.DOUBLE, I, R)));
        assertEquals("CP factors must be U_N [E, R], U_I [in, R], U_O [out, R] of one R, got [8, 5], [6, 6], [7, 5]",
                rank.getMessage());
    }

    @ParameterizedTest
    @CsvSource({"DOUBLE, 1, 1e-12", "DOUBLE, 2, 1e-12", "DOUBLE, 8, 1e-12", "FLOAT, 2, 1e-4"})
    void backwardEqualsMaterialised(DataType dt, int k, double tolerance) {
        CpFactors[] f = layer(dt, 21 + k);
        INDArray x = LowRankAdapters.uniform(new Random(15), dt, 1.0, T, D);
        INDArray dOut = LowRankAdapters.uniform(new Random(17), dt, 1.0, T, D);
        Routes routes = route(x, LowRankAdapters.uniform(new Random(16), dt, 1.0, E, D), k);
        CpExperts experts = new CpExperts(f[0], f[1], f[2], new Nd4jGroupedGemm());
        ExpertGradients fast = experts.backward(experts.forward(x, routes), dOut);
        ExpertGradients naive = new CpExpertsNaive(f[0], f[1], f[2]).backward(x, routes, dOut);
        assertTrue(fast.gate() == null && fast.up() == null && fast.down() == null, "no LoRA gradients");
        assertTrue(relativeDiff(fast.dx(), naive.dx()) <= tolerance, "dx vs materialised");
        double[] dg = fast.dWeights();
        double[] dgNaive = naive.dWeights();
        for (int j = 0; j < dg.length; j++) {
            assertEquals(dgNaive[j], dg[j], tolerance * 10 * Math.max(1, Math.abs(dgNaive[j])), "dL/dg of pair " + j);
        }
        CpFactors[] a = {fast.cp().gate(), fast.cp().up(), fast.cp().down()};
        CpFactors[] b = {naive.cp().gate(), naive.cp().up(), naive.cp().down()};
        for (int p = 0; p < 3; p++) {
            assertTrue(b[p].experts().amaxNumber().doubleValue() > 0.1, "projection " + p + "'s dU_N is not ~0");
            assertTrue(relativeDiff(a[p].experts(), b[p].experts()) <= tolerance, "projection " + p + ": dU_N");
            assertTrue(relativeDiff(a[p].in(), b[p].in()) <= tolerance, "projection " + p + ": dU_I");
            assertTrue(relativeDiff(a[p].out(), b[p].out()) <= tolerance, "projection " + p + ": dU_O");
        }
    }

    @Test
    void backwardNeedsItsOwnPass() {
        CpFactors[] f = layer(DataType.DOUBLE, 6);
        CpExperts experts = new CpExperts(f[0], f[1], f[2], new Nd4jGroupedGemm());
        INDArray x = LowRankAdapters.uniform(new Random(8), DataType.DOUBLE, 1.0, T, D);
        ExpertFfn.Pass pass = experts.forward(x, route(x, LowRankAdapters.uniform(new Random(9), DataType.DOUBLE, 1.0,
                E, D), 2));
        Exception e = assertThrows(IllegalArgumentException.class, () -> experts.backward(pass, x.getRows(0, 1)));
        assertEquals("dOut must be [9, 6] DOUBLE (T, D), got [2, 6] DOUBLE", e.getMessage());
        Exception other = assertThrows(IllegalArgumentException.class, () -> experts.backward(() -> x, x));
        assertTrue(other.getMessage().startsWith("CP experts' backward needs a pass from their forward"),
                other.getMessage());
    }
}
