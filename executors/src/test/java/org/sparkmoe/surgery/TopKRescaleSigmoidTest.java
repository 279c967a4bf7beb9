package org.sparkmoe.surgery;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.calib.LayerRouterStats;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.routing.ScoreFunction;

/**
 * The top-K → top-M rescale of a sigmoid router (GLM-4.5: sigmoid scores, a selection-only correction bias, 4 groups
 * of which 2 are kept, renormalised weights times routed_scaling_factor 2.5), checked against measured output norms:
 * with independent random experts the routed output's mean squared norm at top-K equals that at top-M with every
 * down-projection scaled by the measured α (see {@link TopKRescale}). The α a softmax reading of the same logits
 * would give is further off, and the scaling factor does not change α.
 */
class TopKRescaleSigmoidTest {
    private static final int T = 6000;
    private static final int D = 16;
    private static final int I = 8;
    private static final int E = 16;
    private static final int K = 4;
    private static final int M = 2;

    private static RoutingRule rule(double scaling) {
        return new RoutingRule(K, ScoreFunction.SIGMOID, true, 4, 2, RoutingRule.GroupRank.TOP2_SUM, scaling);
    }

    @Test
    void measuredAlphaKeepsTheRoutedOutputNorm() {
        Random rnd = new Random(7);
        double[] bias = new double[E];
        for (int e = 0; e < E; e++) {
            bias[e] = 0.1 * rnd.nextGaussian();
        }
        Router router = new Router(gaussian(rnd, DataType.DOUBLE, 0.4, E, D), null, bias);
        ExpertWeights experts = new ExpertWeights(gaussian(rnd, DataType.DOUBLE, 0.4, E, I, D),
                gaussian(rnd, DataType.DOUBLE, 0.4, E, I, D), gaussian(rnd, DataType.DOUBLE, 0.4, E, D, I));
        MoeBlock block = new MoeBlock(router, RouterOptions.of(rule(2.5)), new FullExperts(experts,
                new Nd4jGroupedGemm()), null);
        INDArray x = gaussian(rnd, DataType.DOUBLE, 1.0, T, D);

        double alpha = alpha(router, x, rule(2.5), true);
        assertEquals(alpha, alpha(router, x, rule(1.0), true), 0.0, "routed_scaling_factor cancels in α");
        double softmaxAlpha = alpha(router, x, rule(2.5), false);

        double normK = meanSquaredNorm(block.forward(x, K).hidden());
        double normM = meanSquaredNorm(block.forward(x, M).hidden());
        double ratio = normK / (alpha * alpha * normM);
        double softmaxRatio = normK / (softmaxAlpha * softmaxAlpha * normM);
        System.out.printf("sigmoid top-%d → top-%d: α %.4f, E‖y_K‖² / E‖α·y_M‖² = %.4f (softmax-read α %.4f: %.4f)%n",
                K, M, alpha, ratio, softmaxAlpha, softmaxRatio);
        assertTrue(alpha < 0.95, "dropping half the experts shrinks the weights' square sum: α " + alpha);
        assertEquals(1.0, ratio, 0.05, "measured α keeps the routed output norm");
        assertTrue(Math.abs(softmaxRatio - 1) > 2 * Math.abs(ratio - 1), "a softmax reading is further off");
    }

    /** α from calibration statistics of the router on x: the router's own ranking, or a softmax reading of it. */
    private static double alpha(Router router, INDArray x, RoutingRule rule, boolean sigmoid) {
        INDArray logits = router.logits(x);
        RoutingRule read = sigmoid ? rule : new RoutingRule(K, ScoreFunction.SOFTMAX, true, 4, 2,
                RoutingRule.GroupRank.TOP2_SUM, 1.0);
        LayerRouterStats stats = new LayerRouterStats(E, K, sigmoid, 4, true);
        stats.add(logits, router.rank(logits, read));
        RoutingStats.Layer layer = new RoutingStats.Layer(stats.count(), stats.logitSum(), stats.topmSqSum(),
                stats.tokens());
        return TopKRescale.measured(layer, K, M);
    }

    private static double meanSquaredNorm(INDArray y) {
        return y.mul(y).sumNumber().doubleValue() / y.size(0);
    }
}
