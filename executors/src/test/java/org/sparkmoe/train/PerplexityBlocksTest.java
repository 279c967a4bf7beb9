package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.kernels.Softmax;
import org.sparkmoe.model.KlDivergence;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.Perplexity;

/**
 * Window NLL from logits taken in row blocks: one block is the whole [B·S, V] logits, bit for bit; smaller blocks
 * agree to float32 rounding (OpenBLAS's sgemm rounds a row differently depending on how many rows a call has, by
 * about 1e-6 relative in a logit).
 */
class PerplexityBlocksTest {

    @Test
    void blockwiseLogitsGiveTheWholeMatrixNll() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 3, 19, 11);
        int vocab = model.config().vocab_size;
        float[] all = model.forward(windows, model.config().num_experts_per_tok, false).logits().data().asFloat();
        double[] whole = new double[windows.length];
        for (int b = 0; b < windows.length; b++) {
            for (int s = 0; s + 1 < windows[b].length; s++) {
                int row = (b * windows[b].length + s) * vocab;
                whole[b] += Softmax.logSumExp(all, row, vocab, new double[vocab]) - all[row + windows[b][s + 1]];
            }
        }
        double[] oneBlock = Perplexity.windowNll(model, windows, 2, Long.MAX_VALUE);
        double[] blocksOfFive = Perplexity.windowNll(model, windows, 2, 5L * vocab);   // blocks cut across windows
        double[] rowByRow = Perplexity.windowNll(model, windows, 2, 1);
        assertArrayEquals(whole, oneBlock);
        for (int b = 0; b < whole.length; b++) {
            assertTrue(whole[b] > 0);
            assertEquals(whole[b], blocksOfFive[b], 1e-7 * whole[b], "window " + b + ", blocks of 5 rows");
            assertEquals(whole[b], rowByRow[b], 1e-7 * whole[b], "window " + b + ", row by row");
        }
    }

    /**
     * KL divergence from row blocks of both models' logits: a model against itself gives KL 0 and its own NLL at
     * every token, the same bits as {@link Perplexity} with the same blocks; at top-1 against top-2 the two differ.
     */
    @Test
    void blockwiseKlDivergenceOfAModelAgainstItselfIsZero() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 3, 19, 11);
        int vocab = model.config().vocab_size;
        int scored = Perplexity.scoredTokens(windows[0].length);
        double[] perplexity = Perplexity.windowNll(model, windows, 2, 5L * vocab);
        KlDivergence.Tokens same = KlDivergence.of(model, 2, model, 2, windows, 5L * vocab);
        double[] summed = new double[windows.length];
        for (int i = 0; i < same.kld().length; i++) {
            assertEquals(0.0, same.kld()[i], "token " + i);
            assertEquals(same.baselineNll()[i], same.nll()[i], "token " + i);
            assertTrue(same.sameTop()[i], "token " + i);
            summed[i / scored] += same.nll()[i];
        }
        assertArrayEquals(perplexity, summed);
        KlDivergence.Tokens topOne = KlDivergence.of(model, 2, model, 1, windows, 5L * vocab);
        assertArrayEquals(same.baselineNll(), topOne.baselineNll());
        assertTrue(java.util.Arrays.stream(topOne.kld()).sum() > 0);
    }
}
