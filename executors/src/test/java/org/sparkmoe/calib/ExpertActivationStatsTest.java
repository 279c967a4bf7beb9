package org.sparkmoe.calib;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.kernels.Workers;

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

    /** Tokens 0 and 2 go to expert 1; expert 2 gets no token unless every expert sees every token. */
    @Test
    void meansAndMaximaOverTheRoutedTokens() {
        INDArray x = Nd4j.create(new float[] {1, -2, 3, 0, -4, 1, 0, 2, 0.5f, 0.5f, -1, 1}, new long[] {3, D}, 'c');
        int[] selected = {1, 0, 0, 0, 1, 0}; // [T=3, K=2]
        ExpertActivationStats s = new ExpertActivationStats(E, D, I);
        s.add(x, selected, 2, weights(), false);
        assertArrayEquals(new long[] {4, 2, 0}, s.tokens());
        float[] mean1 = s.inputAbsMean().getRow(1).toFloatVector();
        assertArrayEquals(new float[] {0.75f, 1.25f, 2f, 0.5f}, mean1, 1e-6f);
        assertArrayEquals(new float[] {1f, 2f, 3f, 1f}, s.inputAbsMax().getRow(1).toFloatVector(), 0f);
        assertArrayEquals(new float[D], s.inputAbsMax().getRow(2).toFloatVector(), 0f);
        assertEquals(0.0, s.intermediateAbsMean().getRow(2).sumNumber().doubleValue());

        ExpertActivationStats all = new ExpertActivationStats(E, D, I);
        all.add(x, selected, 2, weights(), true);
        assertArrayEquals(new long[] {3, 3, 3}, all.tokens());
        assertTrue(all.intermediateAbsMean().getRow(2).sumNumber().doubleValue() > 0);
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
        s.add(x, new int[6], 1, w, false);                                   // every token to expert 0
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
        INDArray[] batches = new INDArray[4];
        int[][] selections = new int[4][];
        for (int b = 0; b < 4; b++) {
            batches[b] = Nd4j.randn(DataType.FLOAT, 6, D);
            selections[b] = new int[] {0, 1, 2, 0, 1, 2, 0, 2, 1, 0, 2, 1};
        }
        ExpertActivationStats[] parts = new ExpertActivationStats[4];
        for (int b = 0; b < 4; b++) {
            parts[b] = new ExpertActivationStats(E, D, I);
            parts[b].add(batches[b], selections[b], 2, w, false);
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
