package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Softmax;

/**
 * Causal-LM negative log-likelihood of token windows (docs/data.md's protocol): in a window of S tokens,
 * positions 1..S-1 are scored, each predicted from its own window's prefix. Log-softmax in double
 * from float32 logits.
 */
public final class Perplexity {
    private Perplexity() {
    }

    /** Scored tokens per window of {@code window} tokens. */
    public static int scoredTokens(int window) {
        return window - 1;
    }

    /** @return per window, the sum of −log p(token[s+1] | token[0..s]) over s = 0..S-2 */
    public static double[] windowNll(MoeTransformer model, int[][] windows, int topK) {
        INDArray logits = model.forward(windows, topK, false).logits();              // [B·S, V]
        int seq = windows[0].length;
        int vocab = (int) logits.size(1);
        float[] all = logits.data().asFloat();
        double[] nll = new double[windows.length];
        for (int b = 0; b < windows.length; b++) {
            for (int s = 0; s + 1 < seq; s++) {
                int row = (b * seq + s) * vocab;
                nll[b] += Softmax.logSumExp(all, row, vocab) - all[row + windows[b][s + 1]];
            }
        }
        return nll;
    }
}
