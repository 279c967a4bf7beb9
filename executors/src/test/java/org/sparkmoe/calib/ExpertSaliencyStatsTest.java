package org.sparkmoe.calib;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelLoader;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RoutingRule;
import org.sparkmoe.train.TinyModels;

import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * REAP and EAN of the float32 models against a float64 reference written here from the fixtures' weights, for every
 * family we read: the routing weight rebuilt from the router's scores (top-K renormalisation, routed_scaling_factor)
 * and each expert's output from its three matrices widened to float64, one token at a time, from the same captured
 * router inputs. The accumulator's outputs are float32 products, so they agree to float32 precision (1e-5 of the
 * largest value), not to the bit.
 */
class ExpertSaliencyStatsTest {
    private static final String REF = "tests/src/test/resources/reference/";

    private static MoeTransformer load(String relative, DataType type) {
        org.apache.hadoop.fs.Path dir = TinyModels.folder(relative);
        Configuration conf = new Configuration();
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            return ModelLoader.load(ModelFolder.readConfig(dir, conf), checkpoint, new Nd4jGroupedGemm(), type);
        }
    }

    private static int[][] tokens(MoeTransformer model, long seed) {
        Random rnd = new Random(seed);
        int[][] w = new int[2][6];
        for (int[] row : w) {
            for (int s = 0; s < row.length; s++) {
                row[s] = rnd.nextInt(model.config().vocab_size);
            }
        }
        return w;
    }

    @ParameterizedTest
    @ValueSource(strings = {TinyModels.MIXTRAL, REF + "qwen2-moe-tiny", REF + "qwen3-moe-tiny", REF + "olmoe-tiny",
            REF + "glm4-moe-tiny", REF + "deepseek-v3-tiny", REF + "gpt-oss-tiny"})
    void reapAndEanMatchAFloat64Reference(String fixture) {
        MoeTransformer model = load(fixture, DataType.FLOAT);
        int topK = model.config().num_experts_per_tok;
        ForwardOutput capture = model.forward(tokens(model, 7), topK, true);
        List<MoeBlock> blocks = CalibrationStats.moeBlocks(model);
        for (int l = 0; l < blocks.size(); l++) {
            MoeBlock block = blocks.get(l);
            INDArray x = capture.routerInputs().get(l);                                     // [T, D]
            INDArray logits = capture.routerLogits().get(l);                                // [T, E]
            RoutingRule rule = block.options().rule().withTopK(topK);
            ExpertSaliencyStats stats = new ExpertSaliencyStats(block.experts().experts());
            stats.add(((FullExperts) block.experts()).routedRows(x, block.router().route(logits, rule)));

            Reference ref = reference(x, block.router().rank(logits, rule), rule,
                    ((FullExperts) block.experts()).weights());
            assertArrayEquals(ref.routed, stats.routed(), fixture + " layer " + l);
            assertArrayEquals(ref.ean, stats.ean(), 1e-5 * max(ref.ean), fixture + " EAN, layer " + l);
            double[] reap = new double[ref.routed.length];
            for (int e = 0; e < reap.length; e++) {
                reap[e] = ref.routed[e] == 0 ? 0 : ref.reapSum[e] / ref.routed[e];
            }
            assertArrayEquals(reap, stats.reap(), 1e-5 * max(reap), fixture + " REAP, layer " + l);
            assertTrue(max(reap) > 0, fixture + ": some expert is salient");
        }
    }

    private record Reference(long[] routed, double[] reapSum, double[] ean) {
    }

    /** Per token: the top-K of the router's order, their weights from the scores, each expert's output norm. */
    private static Reference reference(INDArray x, Router.Ranking[] rankings, RoutingRule rule, ExpertWeights w) {
        int experts = w.experts();
        long[] routed = new long[experts];
        double[] reapSum = new double[experts];
        double[] ean = new double[experts];
        double[][] xs = x.toDoubleMatrix();
        for (int t = 0; t < rankings.length; t++) {
            int[] chosen = java.util.Arrays.copyOf(rankings[t].order(), rule.topK());
            double sum = 0;
            for (int e : chosen) {
                sum += rankings[t].scores()[e];
            }
            for (int e : chosen) {
                double g = rankings[t].scores()[e] / (rule.normalizeTopK() ? sum : 1.0) * rule.scalingFactor();
                double norm = norm(expertOutput(w, e, xs[t]));
                routed[e]++;
                reapSum[e] += g * norm;
                ean[e] += norm;
            }
        }
        return new Reference(routed, reapSum, ean);
    }

    /** w2·act(w1·x + b1, w3·x + b3) + b2, in float64. */
    private static double[] expertOutput(ExpertWeights w, int e, double[] x) {
        double[][] w1 = w.w1().widened(e, DataType.DOUBLE).toDoubleMatrix();
        double[][] w3 = w.w3().widened(e, DataType.DOUBLE).toDoubleMatrix();
        double[][] w2 = w.w2().widened(e, DataType.DOUBLE).toDoubleMatrix();
        double[] act = new double[w1.length];
        for (int i = 0; i < act.length; i++) {
            double h1 = dot(w1[i], x) + (w.hasBiases() ? w.b1().getDouble(e, i) : 0);
            double h3 = dot(w3[i], x) + (w.hasBiases() ? w.b3().getDouble(e, i) : 0);
            act[i] = w.activation() == GatedActivation.CLAMPED_SWIGLU ? clampedSwiglu(h1, h3) : h1 / (1 + Math.exp(-h1)) * h3;
        }
        double[] y = new double[w2.length];
        for (int d = 0; d < y.length; d++) {
            y[d] = dot(w2[d], act) + (w.hasBiases() ? w.b2().getDouble(e, d) : 0);
        }
        return y;
    }

    /** gpt-oss: g = min(h1, 7), u = clamp(h3, −7, 7), (u + 1)·g·σ(1.702·g). */
    private static double clampedSwiglu(double h1, double h3) {
        double g = Math.min(h1, 7.0);
        double u = Math.max(-7.0, Math.min(h3, 7.0));
        return (u + 1) * g / (1 + Math.exp(-1.702 * g));
    }

    private static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += a[i] * b[i];
        }
        return s;
    }

    private static double norm(double[] v) {
        return Math.sqrt(dot(v, v));
    }

    private static double max(double[] v) {
        return java.util.Arrays.stream(v).max().orElse(0);
    }

    /** Any split of the tokens and any merge order give the same bits (float32, the tiny Mixtral). */
    @Test
    void mergeOrderDoesNotMatter() {
        MoeTransformer model = load(TinyModels.MIXTRAL, DataType.FLOAT);
        MoeBlock block = CalibrationStats.moeBlocks(model).get(0);
        ExpertSaliencyStats[] parts = new ExpertSaliencyStats[3];
        for (int b = 0; b < parts.length; b++) {
            ForwardOutput capture = model.forward(tokens(model, 100 + b), 2, true);
            parts[b] = new ExpertSaliencyStats(8);
            parts[b].add(((FullExperts) block.experts()).routedRows(capture.routerInputs().get(0),
                    block.router().route(capture.routerLogits().get(0), block.options().rule())));
        }
        ExpertSaliencyStats inOrder = new ExpertSaliencyStats(8).merge(parts[0]).merge(parts[1]).merge(parts[2]);
        ExpertSaliencyStats tree = new ExpertSaliencyStats(8).merge(parts[2])
                .merge(new ExpertSaliencyStats(8).merge(parts[1]).merge(parts[0]));
        assertTrue(inOrder.sameAs(tree));
        assertEquals(3 * 12 * 2, java.util.Arrays.stream(tree.routed()).sum());
        assertFalse(new ExpertSaliencyStats(8).merge(parts[0]).sameAs(tree));
    }
}
