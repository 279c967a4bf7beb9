package org.sparkmoe.calib;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LoraExperts;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RoutingRule;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ExpertActivationStatsTest {
    private static final int E = 3;
    private static final int D = 4;
    private static final int I = 5;

    private static ExpertWeights weights() {
        Nd4j.getRandom().setSeed(1);
        return new ExpertWeights(Nd4j.randn(DataType.FLOAT, E, I, D), Nd4j.randn(DataType.FLOAT, E, I, D),
                Nd4j.randn(DataType.FLOAT, E, D, I));
    }

    /**
     * The routed rows of x [T, D] through experts {@code w} when token t picks, in order, the experts {@code picks[t]}
     * (K = picks[t].length): the router's logits put them first.
     */
    private static FullExperts.RoutedRows routed(ExpertWeights w, INDArray x, int[][] picks) {
        float[] logits = new float[picks.length * E];                                        // [T, E]
        for (int t = 0; t < picks.length; t++) {
            for (int k = 0; k < picks[t].length; k++) {
                logits[t * E + picks[t][k]] = 5 - k;
            }
        }
        int topK = picks[0].length;
        Router router = new Router(Nd4j.zeros(DataType.FLOAT, E, D));
        return new FullExperts(w, new Nd4jGroupedGemm()).routedRows(x, router.route(
                Nd4j.create(logits, new long[] {picks.length, E}, 'c'), RoutingRule.softmaxTopK(topK, true)));
    }

    /**
     * Tokens 0 and 2 go to expert 1, token 1 to expert 0; expert 2 gets no token unless every expert sees every
     * token.
     */
    @Test
    void meansAndMaximaOverTheRoutedTokens() {
        INDArray x = Nd4j.create(new float[] {1, -2, 3, 0, -4, 1, 0, 2, 0.5f, 0.5f, -1, 1}, new long[] {3, D}, 'c');
        ExpertWeights w = weights();
        ExpertActivationStats s = new ExpertActivationStats(E, D, I);
        s.add(routed(w, x, new int[][] {{1}, {0}, {1}}), null);
        assertArrayEquals(new long[] {1, 2, 0}, s.tokens());
        float[] mean1 = s.inputAbsMean().getRow(1).toFloatVector();
        assertArrayEquals(new float[] {0.75f, 1.25f, 2f, 0.5f}, mean1, 1e-6f);
        assertArrayEquals(new float[] {1f, 2f, 3f, 1f}, s.inputAbsMax().getRow(1).toFloatVector(), 0f);
        assertArrayEquals(new float[D], s.inputAbsMax().getRow(2).toFloatVector(), 0f);
        assertEquals(0.0, s.intermediateAbsMean().getRow(2).sumNumber().doubleValue());
        INDArray x1 = Nd4j.pullRows(x, 1, new int[] {0, 2});                                    // expert 1's rows
        INDArray h = Activations.gated(GatedActivation.SWIGLU, x1.mmul(w.w1().matrix(1).transpose()),
                x1.mmul(w.w3().matrix(1).transpose()), Workers.SERIAL);
        assertArrayEquals(org.nd4j.linalg.ops.transforms.Transforms.abs(h).max(0).toFloatVector(),
                s.intermediateAbsMax().getRow(1).toFloatVector(), 1e-5f);

        ExpertActivationStats all = new ExpertActivationStats(E, D, I);
        all.addEveryToken(x, new FullExperts(w, new Nd4jGroupedGemm()), null);
        assertArrayEquals(new long[] {3, 3, 3}, all.tokens());
        assertTrue(all.intermediateAbsMean().getRow(2).sumNumber().doubleValue() > 0);
        assertArrayEquals(new float[] {4f, 2f, 3f, 2f}, all.inputAbsMax().getRow(2).toFloatVector(), 0f);
    }

    /**
     * Every token through every expert runs the experts as the forward does: with LoRA on w1 and w3, expert 2's
     * intermediate maxima are those of silu(x·W1ᵀ + s·x·A1ᵀ·B1ᵀ) ⊙ (x·W3ᵀ + s·x·A3ᵀ·B3ᵀ), not the base
     * weights'.
     */
    @Test
    void everyTokenThroughTheAdaptedExperts() {
        INDArray x = Nd4j.create(new float[] {1, -2, 3, 0, -4, 1, 0, 2, 0.5f, 0.5f, -1, 1}, new long[] {3, D}, 'c');
        ExpertWeights w = weights();
        Nd4j.getRandom().setSeed(2);
        LoraExperts gate = new LoraExperts(Nd4j.randn(DataType.FLOAT, E, 2, D), Nd4j.randn(DataType.FLOAT, E, I, 2), 4);
        LoraExperts up = new LoraExperts(Nd4j.randn(DataType.FLOAT, E, 2, D), Nd4j.randn(DataType.FLOAT, E, I, 2), 2);
        ExpertActivationStats adapted = new ExpertActivationStats(E, D, I);
        adapted.addEveryToken(x, new FullExperts(w, gate, up, null, new Nd4jGroupedGemm()), null);
        ExpertActivationStats base = new ExpertActivationStats(E, D, I);
        base.addEveryToken(x, new FullExperts(w, new Nd4jGroupedGemm()), null);

        INDArray h1 = x.mmul(w.w1().matrix(2).transpose()).addi(x.mmul(gate.a().slice(2).transpose())
                .mmul(gate.b().slice(2).transpose()).muli(gate.scale()));                     // [T, I]
        INDArray h3 = x.mmul(w.w3().matrix(2).transpose()).addi(x.mmul(up.a().slice(2).transpose())
                .mmul(up.b().slice(2).transpose()).muli(up.scale()));
        float[] expected = org.nd4j.linalg.ops.transforms.Transforms.abs(
                Activations.gated(GatedActivation.SWIGLU, h1, h3, Workers.SERIAL)).max(0).toFloatVector();
        assertArrayEquals(expected, adapted.intermediateAbsMax().getRow(2).toFloatVector(), 1e-4f);
        float[] unadapted = base.intermediateAbsMax().getRow(2).toFloatVector();
        double apart = 0;
        for (int i = 0; i < I; i++) {
            apart = Math.max(apart, Math.abs(unadapted[i] - expected[i]));
        }
        assertTrue(apart > 0.1, "the LoRA moves the maxima (by " + apart + ")");
        assertArrayEquals(new long[] {3, 3, 3}, adapted.tokens());
    }

    /**
     * An expert's rows reach the statistics and {@code Seen} in blocks of at most BLOCK_FLOATS floats (2 rows at
     * I = 30,000), together exactly the forward's rows: 5 tokens to expert 0 make blocks of 2, 2 and 1.
     */
    @Test
    void rowsAreReadInBlocksThatTogetherAreTheForwardsRows() {
        int e = 2;
        int i = 30_000;
        Nd4j.getRandom().setSeed(3);
        ExpertWeights w = new ExpertWeights(Nd4j.randn(DataType.FLOAT, e, i, D), Nd4j.randn(DataType.FLOAT, e, i, D),
                Nd4j.randn(DataType.FLOAT, e, D, i));
        INDArray x = Nd4j.randn(DataType.FLOAT, 5, D);
        float[] logits = new float[5 * e];
        Router router = new Router(Nd4j.zeros(DataType.FLOAT, e, D));
        FullExperts.RoutedRows rows = new FullExperts(w, new Nd4jGroupedGemm()).routedRows(x,
                router.route(Nd4j.create(logits, new long[] {5, e}, 'c').addi(Nd4j.create(new float[] {1, 0},
                        new long[] {1, e}, 'c')), RoutingRule.softmaxTopK(1, true)));
        java.util.List<Integer> blocks = new java.util.ArrayList<>();
        float[] seenX = new float[5 * D];
        float[] seenH = new float[5 * i];
        int[] rowsSeen = {0};
        ExpertActivationStats s = new ExpertActivationStats(e, D, i);
        s.add(rows, (expert, xs, hs) -> {
            assertEquals(0, expert);
            int n = xs.length / D;
            assertEquals(n * i, hs.length);
            blocks.add(n);
            System.arraycopy(xs, 0, seenX, rowsSeen[0] * D, xs.length);
            System.arraycopy(hs, 0, seenH, rowsSeen[0] * i, hs.length);
            rowsSeen[0] += n;
        });
        assertEquals(java.util.List.of(2, 2, 1), blocks);
        assertArrayEquals(Flat.floats(x), seenX, 0f, "every token went to expert 0, in token order");
        assertArrayEquals(Flat.floats(rows.act()), seenH, 0f);
        assertArrayEquals(new long[] {5, 0}, s.tokens());
        assertArrayEquals(org.nd4j.linalg.ops.transforms.Transforms.abs(x).max(0).toFloatVector(),
                s.inputAbsMax().getRow(0).toFloatVector(), 0f);
        assertArrayEquals(org.nd4j.linalg.ops.transforms.Transforms.abs(rows.act()).max(0).toFloatVector(),
                s.intermediateAbsMax().getRow(0).toFloatVector(), 0f);
    }

    /** gpt-oss: the intermediate channels are the clamped gate of the biased gate and up projections. */
    @Test
    void gptOssIntermediatesAreTheClampedGateOfTheBiasedProjections() {
        Nd4j.getRandom().setSeed(2);
        INDArray w1 = Nd4j.randn(DataType.FLOAT, E, I, D).muli(4);
        INDArray w3 = Nd4j.randn(DataType.FLOAT, E, I, D).muli(4);
        INDArray b1 = Nd4j.randn(DataType.FLOAT, E, I);
        INDArray b3 = Nd4j.randn(DataType.FLOAT, E, I);
        ExpertWeights w = new ExpertWeights(WeightStack.of(w1), WeightStack.of(w3),
                WeightStack.of(Nd4j.randn(DataType.FLOAT, E, D, I)), b1, b3, Nd4j.randn(DataType.FLOAT, E, D),
                GatedActivation.CLAMPED_SWIGLU);
        INDArray x = Nd4j.randn(DataType.FLOAT, 6, D);
        ExpertActivationStats s = new ExpertActivationStats(E, D, I);
        s.add(routed(w, x, new int[][] {{0}, {0}, {0}, {0}, {0}, {0}}), null);     // every token to expert 0
        INDArray h1 = x.mmul(w1.slice(0).transpose()).addiRowVector(b1.getRow(0));
        INDArray h3 = x.mmul(w3.slice(0).transpose()).addiRowVector(b3.getRow(0));
        INDArray expected = org.nd4j.linalg.ops.transforms.Transforms.abs(
                Activations.gated(GatedActivation.CLAMPED_SWIGLU, h1, h3, Workers.SERIAL)).max(0);
        assertArrayEquals(expected.toFloatVector(), s.intermediateAbsMax().getRow(0).toFloatVector(), 1e-5f);
        assertTrue(h1.gt(GatedActivation.LIMIT).castTo(DataType.INT32).sumNumber().intValue() > 0, "the clamp acts");
    }

    @Test
    void mergeOrderDoesNotMatter() {
        ExpertWeights w = weights();
        int[][] picks = {{0, 1}, {2, 0}, {1, 2}, {0, 2}, {1, 0}, {2, 1}};
        ExpertActivationStats[] parts = new ExpertActivationStats[4];
        for (int b = 0; b < 4; b++) {
            parts[b] = new ExpertActivationStats(E, D, I);
            parts[b].add(routed(w, Nd4j.randn(DataType.FLOAT, 6, D), picks), null);
        }
        ExpertActivationStats inOrder = new ExpertActivationStats(E, D, I);
        for (ExpertActivationStats p : parts) {
            inOrder.merge(p);
        }
        ExpertActivationStats tree = new ExpertActivationStats(E, D, I).merge(parts[3]).merge(parts[1])
                .merge(new ExpertActivationStats(E, D, I).merge(parts[2]).merge(parts[0]));
        assertTrue(inOrder.sameAs(tree));
        assertArrayEquals(new long[] {16, 16, 16}, tree.tokens());
    }
}
