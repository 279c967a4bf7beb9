package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;

/**
 * Central finite differences in float64 for every element of the nine CP factors (U_N, U_I, U_O of w1, w3, w2), of
 * the router gate and of the input of an MoE block over {@link CpExperts} with a trainable router (so dL/dg and the
 * input's gradient through the routing weights are checked too), with and without top-k renormalisation, and with
 * k = E. Loss L = Σ out ⊙ P for a fixed random P, so dL/dout = P. Step and acceptance as
 * {@link LowRankGradientCheckTest}: h = 1e-6; |analytic − numeric| ≤ 1e-6 · max(|analytic|, |numeric|) or ≤ 1e-8.
 * The perturbation must not change the routing decision; the check asserts it did not.
 */
class CpExpertsGradientCheckTest {
    static final String[] NAMES = {"U_N1", "U_I1", "U_O1", "U_N3", "U_I3", "U_O3", "U_N2", "U_I2", "U_O2", "gate",
            "x"};

    @ParameterizedTest(name = "K {0}, normalizeTopK {1}")
    @CsvSource({"2, true", "2, false", "8, true"})
    void gradientsMatchCentralDifferences(int k, boolean normalize) {
        long seed = 31 + k + (normalize ? 1 : 0);
        CpFactors[] f = CpExpertsTest.layer(DataType.DOUBLE, seed);
        INDArray gate = LowRankAdapters.uniform(new Random(seed + 1), DataType.DOUBLE, 1.0, CpExpertsTest.E,
                CpExpertsTest.D);
        MoeBlock block = new MoeBlock(new Router(gate), RouterOptions.of(RoutingRule.softmaxTopK(k, normalize))
                .withTrainable(true), new CpExperts(f[0], f[1], f[2], new Nd4jGroupedGemm()), null);
        INDArray x = LowRankAdapters.uniform(new Random(seed + 2), DataType.DOUBLE, 1.0, CpExpertsTest.T,
                CpExpertsTest.D);
        INDArray p = LowRankAdapters.uniform(new Random(seed + 3), DataType.DOUBLE, 1.0, CpExpertsTest.T,
                CpExpertsTest.D);

        MoeBlock.Context pass = block.forward(x);
        int[] experts = pass.routes().experts();
        MoeBlock.Gradients g = block.backward(pass, p);
        CpGradients cp = g.experts().cp();
        INDArray[] params = {f[0].experts(), f[0].in(), f[0].out(), f[1].experts(), f[1].in(), f[1].out(),
                f[2].experts(), f[2].in(), f[2].out(), gate, x};
        INDArray[] grads = {cp.gate().experts(), cp.gate().in(), cp.gate().out(), cp.up().experts(), cp.up().in(),
                cp.up().out(), cp.down().experts(), cp.down().in(), cp.down().out(), g.dRouter(), g.dx()};
        int checked = FactorGradientCheck.check(NAMES, params, grads, j -> () -> loss(block, x, p, experts));
        assertTrue(checked > 300, "most gradients are resolvable, not ~0: " + checked);
    }

    /** Σ out ⊙ p, asserting the routing decision is the one the gradient was taken at. */
    private static double loss(MoeBlock block, INDArray x, INDArray p, int[] experts) {
        MoeBlock.Context pass = block.forward(x);
        assertArrayEquals(experts, pass.routes().experts(), "a finite-difference step changed the routing");
        return pass.out().mul(p).sumNumber().doubleValue();
    }
}
