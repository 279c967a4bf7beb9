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
 * Central finite differences in float64 for every element of the nine TR cores (G_N, G_I, G_O of w1, w3, w2), of the
 * router gate and of the input of an MoE block over {@link TrExperts} with a trainable router (so dL/dg and the input's
 * gradient through the routing weights are checked too), with and without top-k renormalisation, and with k = E, at
 * the unequal ranks (3, 4, 2) of {@link TrExpertsTest}. Loss L = Σ out ⊙ P for a fixed random P, so dL/dout = P. Step
 * and acceptance as {@link LowRankGradientCheckTest}: h = 1e-6; |analytic − numeric| ≤ 1e-6 · max(|analytic|,
 * |numeric|) or ≤ 1e-8. {@link TrFactors} keeps the cores' matrix layouts, so a step on a core refolds that
 * projection's. The perturbation must not change the routing decision; the check asserts it did not.
 */
class TrExpertsGradientCheckTest {
    static final String[] NAMES = {"G_N1", "G_I1", "G_O1", "G_N3", "G_I3", "G_O3", "G_N2", "G_I2", "G_O2", "gate",
            "x"};

    @ParameterizedTest(name = "K {0}, normalizeTopK {1}")
    @CsvSource({"2, true", "2, false", "8, true"})
    void gradientsMatchCentralDifferences(int k, boolean normalize) {
        long seed = 31 + k + (normalize ? 1 : 0);
        TrFactors[] f = TrExpertsTest.layer(DataType.DOUBLE, seed);
        INDArray gate = LowRankAdapters.uniform(new Random(seed + 1), DataType.DOUBLE, 1.0, TrExpertsTest.E,
                TrExpertsTest.D);
        RouterOptions routing = RouterOptions.of(RoutingRule.softmaxTopK(k, normalize)).withTrainable(true);
        INDArray x = LowRankAdapters.uniform(new Random(seed + 2), DataType.DOUBLE, 1.0, TrExpertsTest.T,
                TrExpertsTest.D);
        INDArray p = LowRankAdapters.uniform(new Random(seed + 3), DataType.DOUBLE, 1.0, TrExpertsTest.T,
                TrExpertsTest.D);

        MoeBlock block = block(f, -1, gate, routing);
        MoeBlock.Context pass = block.forward(x);
        int[] experts = pass.routes().experts();
        MoeBlock.Gradients g = block.backward(pass, p);
        TrGradients tr = g.experts().tr();
        INDArray[] params = {f[0].experts(), f[0].in(), f[0].out(), f[1].experts(), f[1].in(), f[1].out(),
                f[2].experts(), f[2].in(), f[2].out(), gate, x};
        INDArray[] grads = {tr.gate().experts(), tr.gate().in(), tr.gate().out(), tr.up().experts(), tr.up().in(),
                tr.up().out(), tr.down().experts(), tr.down().in(), tr.down().out(), g.dRouter(), g.dx()};
        int checked = FactorGradientCheck.check(NAMES, params, grads,                // a core's projection refolded
                j -> () -> loss(block(f, j < 9 ? j / 3 : -1, gate, routing), x, p, experts));
        assertTrue(checked > 300, "most gradients are resolvable, not ~0: " + checked);
    }

    /** The block over the cores, projection {@code rebuilt}'s (−1: none) refolded as it is now. */
    private static MoeBlock block(TrFactors[] f, int rebuilt, INDArray gate, RouterOptions routing) {
        TrFactors[] now = f.clone();
        if (rebuilt >= 0) {
            now[rebuilt] = new TrFactors(f[rebuilt].experts(), f[rebuilt].in(), f[rebuilt].out());
        }
        return new MoeBlock(new Router(gate), routing, new TrExperts(now[0], now[1], now[2], new Nd4jGroupedGemm()),
                null);
    }

    /** Σ out ⊙ p, asserting the routing decision is the one the gradient was taken at. */
    private static double loss(MoeBlock block, INDArray x, INDArray p, int[] experts) {
        MoeBlock.Context pass = block.forward(x);
        assertArrayEquals(experts, pass.routes().experts(), "a finite-difference step changed the routing");
        return pass.out().mul(p).sumNumber().doubleValue();
    }
}
