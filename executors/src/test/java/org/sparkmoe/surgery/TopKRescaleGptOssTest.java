package org.sparkmoe.surgery;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.experts.GradientCheck.gaussian;

import java.util.HashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.calib.LayerRouterStats;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;

/**
 * The top-K → top-M rescale on gpt-oss (softmax over the selected logits, down bias inside the routing weight), on
 * experts that make the derivation's assumption exact: W2 = 0 and b2ᵢ = σ·uᵢ with orthonormal uᵢ, so every expert
 * output is yᵢ = σ·uᵢ and ‖y‖² = σ²·Σ ĝᵢ². The measured α from calibrate's statistics of the same tokens, applied by
 * {@link TopKSurgery} (which must scale b2), gives top-M outputs with the mean squared norm of the top-K outputs.
 */
class TopKRescaleGptOssTest {
    private static final int T = 500;
    private static final int D = 8;
    private static final int I = 4;
    private static final int E = 6;
    private static final int K = 3;
    private static final int M = 1;

    @Test
    void measuredAlphaKeepsTheMeanSquaredOutputNormOfGptOssExperts() {
        Random rnd = new Random(17);
        INDArray router = gaussian(rnd, DataType.FLOAT, 1.0, E, D);
        INDArray routerBias = gaussian(rnd, DataType.FLOAT, 0.5, E);
        INDArray w1 = gaussian(rnd, DataType.FLOAT, 1.0, E, I, D);
        INDArray w3 = gaussian(rnd, DataType.FLOAT, 1.0, E, I, D);
        INDArray b1 = gaussian(rnd, DataType.FLOAT, 0.5, E, I);
        INDArray b3 = gaussian(rnd, DataType.FLOAT, 0.5, E, I);
        INDArray b2 = Nd4j.zeros(DataType.FLOAT, E, D);
        for (int e = 0; e < E; e++) {
            b2.putScalar(e, e, 2.5);                                   // σ·uₑ, orthonormal uₑ
        }
        INDArray x = gaussian(rnd, DataType.FLOAT, 1.0, T, D);

        MoeBlock.Context topK = block(router, routerBias, w1, w3, b1, b3, b2, K).forward(x);
        LayerRouterStats stats = new LayerRouterStats(E, K);
        stats.add(topK.routerLogits(), new Router(router, routerBias, null).rank(topK.routerLogits(),
                RoutingRule.softmaxTopK(K, true)));
        double alpha = TopKRescale.measured(new RoutingStats.Layer(stats.count(), stats.logitSum(),
                stats.topmSqSum(), stats.tokens()), K, M);

        // the surgery on the layer's per-expert tensors: down weights and, for gpt-oss, down biases
        ModelConfig config = ModelConfig.parse("{\"model_type\": \"gpt_oss\", \"vocab_size\": 16, \"hidden_size\": "
                + D + ", \"intermediate_size\": " + I + ", \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                + "\"head_dim\": 4, \"num_local_experts\": " + E + ", \"num_experts_per_tok\": " + K + ", "
                + "\"rms_norm_eps\": 1e-5, \"max_position_embeddings\": 32, \"sliding_window\": 4, "
                + "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}", "test");
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        Map<String, INDArray> tensors = new HashMap<>();
        for (int e = 0; e < E; e++) {
            tensors.put(layout.expert(0, e, Projection.DOWN), Nd4j.zeros(DataType.FLOAT, D, I));
            tensors.put(layout.expertBias(0, e, Projection.DOWN), b2.getRow(e).dup());
        }
        LayerResult result = new TopKSurgery(config, M, new double[] {alpha}).applyPart(of(tensors), 0, 0, 0);
        INDArray scaledB2 = Nd4j.zeros(DataType.FLOAT, E, D);
        for (int e = 0; e < E; e++) {
            scaledB2.getRow(e).assign(result.tensors().get(layout.expertBias(0, e, Projection.DOWN)));
        }

        double before = meanSquaredNorm(topK.out());
        double after = meanSquaredNorm(block(router, routerBias, w1, w3, b1, b3, scaledB2, M).forward(x).out());
        double unscaled = meanSquaredNorm(block(router, routerBias, w1, w3, b1, b3, b2, M).forward(x).out());
        System.out.printf("gpt-oss top-%d → top-%d: α %.6f, E‖y‖² %.6f → %.6f (unscaled %.6f)%n", K, M, alpha, before,
                after, unscaled);
        assertEquals(before, after, 1e-5 * before, "α keeps the mean squared output norm");
        assertTrue(Math.abs(unscaled - before) > 0.05 * before, "without α the norm moves: " + unscaled);
    }

    private static MoeBlock block(INDArray router, INDArray routerBias, INDArray w1, INDArray w3, INDArray b1,
                                  INDArray b3, INDArray b2, int topK) {
        ExpertWeights experts = new ExpertWeights(WeightStack.of(w1), WeightStack.of(w3),
                WeightStack.of(Nd4j.zeros(DataType.FLOAT, E, D, I)), b1, b3, b2, GatedActivation.CLAMPED_SWIGLU);
        return new MoeBlock(new Router(router, routerBias, null), RouterOptions.of(RoutingRule.softmaxTopK(topK, true)),
                new FullExperts(experts, new Nd4jGroupedGemm()), null);
    }

    private static double meanSquaredNorm(INDArray y) {
        INDArray d = y.castTo(DataType.DOUBLE);
        return d.mul(d).sumNumber().doubleValue() / y.size(0);
    }

    private static TensorSource of(Map<String, INDArray> tensors) {
        return new TensorSource() {
            @Override
            public boolean has(String name) {
                return tensors.containsKey(name);
            }

            @Override
            public long[] shape(String name) {
                return tensors.get(name).shape();
            }

            @Override
            public INDArray readFloat(String name) {
                return tensors.get(name).dup();
            }

            @Override
            public String describe() {
                return "in memory";
            }
        };
    }
}
