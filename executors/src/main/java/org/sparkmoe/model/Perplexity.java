package org.sparkmoe.model;

import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.Softmax;
import org.sparkmoe.kernels.StepWorkspace;

/**
 * Causal-LM negative log-likelihood of token windows (docs/data.md's protocol): in a window of S tokens,
 * positions 1..S-1 are scored, each predicted from its own window's prefix. Log-softmax in double
 * from float32 logits. The logits are taken in blocks of rows of at most {@link #LOGIT_BLOCK} elements, so the
 * [B·S, V] matrix (2.5·10⁹ elements at batch 8 × window 2048 × vocabulary 152k) never exists at once; a block stays
 * in native memory and its rows are read one at a time into a reused Java row (the heap holds [V] floats and
 * doubles per call, not a block).
 */
public final class Perplexity {
    /** Logit elements computed at once: 64 MB of float32. */
    public static final long LOGIT_BLOCK = 1L << 24;

    private Perplexity() {
    }

    /** Scored tokens per window of {@code window} tokens. */
    public static int scoredTokens(int window) {
        return window - 1;
    }

    /** @return per window, the sum of −log p(token[s+1] | token[0..s]) over s = 0..S-2 */
    public static double[] windowNll(MoeTransformer model, int[][] windows, int topK) {
        return windowNll(model, windows, topK, LOGIT_BLOCK);
    }

    /** As {@link #windowNll(MoeTransformer, int[][], int)}, taking logits in blocks of about {@code blockElements}. */
    public static double[] windowNll(MoeTransformer model, int[][] windows, int topK, long blockElements) {
        return windowNll(model.ends(), model.finalHidden(windows, topK), windows, blockElements);
    }

    /**
     * As {@link #windowNll(MoeTransformer, int[][], int)} from the final norm's output [B·S, D] of the windows (a
     * layer-sequential pass computes it one layer at a time), with the LM head of {@code ends}.
     */
    public static double[] windowNll(ModelEnds ends, INDArray hidden, int[][] windows) {
        return windowNll(ends, hidden, windows, LOGIT_BLOCK);
    }

    private static double[] windowNll(ModelEnds ends, INDArray hidden, int[][] windows, long blockElements) {
        int seq = windows[0].length;
        int vocab = ends.config().vocab_size;
        long rows = hidden.size(0);
        long block = Math.max(1, blockElements / vocab);
        double[] nll = new double[windows.length];
        float[] row = new float[vocab];                                     // one row of the block, read as stored
        double[] terms = new double[vocab];                                 // logSumExp's scratch
        for (long r0 = 0; r0 < rows; r0 += block) {
            long r1 = Math.min(rows, r0 + block);
            try (MemoryWorkspace step = StepWorkspace.step()) {
                NativeElements logits = NativeElements.of(
                        ends.lmHead(hidden.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all())));   // [n, V]
                for (long r = r0; r < r1; r++) {
                    int b = (int) (r / seq);
                    int s = (int) (r % seq);
                    if (s + 1 < seq) {
                        logits.readFloats((r - r0) * vocab, row, vocab);
                        nll[b] += Softmax.logSumExp(row, 0, vocab, terms) - row[windows[b][s + 1]];
                    }
                }
            }
        }
        return nll;
    }
}
