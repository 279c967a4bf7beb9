package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.moe.MoeBlock;

/**
 * Central finite differences in float64 for every element of every trainable tensor (A and B of the three
 * projections, with B ≠ 0; the router gate, through the routing weights of an MoE block) and of the input, for both
 * implementations, with and without
 * top-k renormalisation, and with k = E; and with gpt-oss's expert biases (mixed by the routing weights, so they add
 * to the router's gradient) and clamped gate, with units past the clamp. Loss L = Σ y ⊙ P for a fixed random P, so dL/dy = P.
 *
 * <p>Step h = 1e-6. An element passes when |analytic − numeric| ≤ 1e-6 · max(|analytic|, |numeric|) or, the
 * absolute floor, when |analytic − numeric| ≤ 1e-8: float64 round-off in L (|L| ~ 1, ε ≈ 1.1e-16) divided by
 * 2h is about 1e-10, and the truncation error h²·L'''/6 about 1e-12, so gradients smaller than ~1e-2 cannot
 * be resolved to 1e-6 relative by differences alone; the floor keeps their absolute error two orders above
 * that noise. The perturbation must not change the routing decision; the check asserts it did not.
 */
class LowRankGradientCheckTest {
    static final double STEP = 1e-6;
    static final double RELATIVE = 1e-6;
    static final double ABSOLUTE_FLOOR = 1e-8;
    /** Worst relative error over elements with max(|analytic|, |numeric|) ≥ 1e-4, across all cases run. */
    static double worstRelative;

    @ParameterizedTest(name = "{0}, K {1}, normalizeTopK {2}")
    @CsvSource({"factorised, 2, true", "factorised, 2, false", "factorised, 8, true", "factorised, 8, false",
            "naive, 2, true", "naive, 2, false", "naive, 8, true", "factorised gpt-oss, 2, true",
            "factorised gpt-oss, 3, true", "naive gpt-oss, 3, true"})
    void gradientsMatchCentralDifferences(String which, int k, boolean normalize) {
        long seed = 7 + k + (normalize ? 1 : 0);
        boolean gptOss = which.endsWith("gpt-oss");   // expert biases mixed by the routing weights, clamped gate
        LowRankExpertsTest.Setup s = gptOss ? LowRankExpertsTest.gptOss(DataType.DOUBLE, seed, k)
                : LowRankExpertsTest.setup(DataType.DOUBLE, seed, k, normalize);
        MoeBlock block = s.block(which.startsWith("factorised") ? s.factorised() : s.naive());
        INDArray x = LowRankExpertsTest.input(DataType.DOUBLE, seed + 1, LowRankExpertsTest.T);
        INDArray p = LowRankAdapters.uniform(new Random(seed + 2), DataType.DOUBLE, 1.0,
                LowRankExpertsTest.T, LowRankExpertsTest.D);

        MoeBlock.Context pass = block.forward(x);
        int[] experts = pass.routes().experts();
        MoeBlock.Gradients g = block.backward(pass, p);
        LowRankAdapters ad = s.weights().adapters();
        INDArray[] params = {ad.a1, ad.b1, ad.a3, ad.b3, ad.a2, ad.b2, s.gate(), x};
        INDArray[] grads = LowRankExpertsTest.gradientArrays(g);
        double worstHere = 0;
        for (int j = 0; j < params.length; j++) {
            INDArray param = params[j];
            INDArray grad = grads[j].dup('c');
            for (long e = 0; e < param.length(); e++) {
                double numeric = GradientCheck.centralDifference(param, e, STEP, () -> loss(block, x, p, experts));
                double analytic = grad.getDouble(e);
                double err = Math.abs(analytic - numeric);
                double size = Math.max(Math.abs(analytic), Math.abs(numeric));
                assertTrue(err <= RELATIVE * size || err <= ABSOLUTE_FLOOR, which + " d" + LowRankExpertsTest.NAMES[j]
                        + "[" + e + "]: analytic " + analytic + ", numeric " + numeric + ", |diff| " + err);
                if (size >= 1e-4) {
                    worstHere = Math.max(worstHere, err / size);
                }
            }
        }
        worstRelative = Math.max(worstRelative, worstHere);
        System.out.printf("gradient check %s K=%d normalizeTopK=%s: worst relative error %.3g (all-case worst %.3g)%n",
                which, k, normalize, worstHere, worstRelative);
    }

    /** Σ y ⊙ p, asserting the routing decision is the one the gradient was taken at. */
    private static double loss(MoeBlock block, INDArray x, INDArray p, int[] experts) {
        MoeBlock.Context pass = block.forward(x);
        assertArrayEquals(experts, pass.routes().experts(), "a finite-difference step changed the routing");
        return pass.out().mul(p).sumNumber().doubleValue();
    }
}
