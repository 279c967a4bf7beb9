package org.sparkmoe.train;

import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.NativeBuffers;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.StepWorkspace;
import org.sparkmoe.kernels.VectorRows;
import org.sparkmoe.model.Perplexity;

/**
 * Causal-LM cross-entropy of token windows (the protocol of {@link org.sparkmoe.model.Perplexity}): in each window
 * of S tokens, positions 1..S-1 are scored, each predicted from the logits of the position before it. The loss is
 * the mean over all B·(S−1) scored positions (= the mean of the windows' means, every window having S−1), as
 * transformers' {@code ForCausalLMLoss} with mean reduction. Computed in float64 (e^x by {@code Exp}, as the eval's
 * log-sum-exp and attention's probabilities), in blocks of rows of at most
 * {@link #BLOCK_ELEMENTS} logits, so the float64 copy on the heap stays small whatever the vocabulary and batch. From
 * given logits ({@link #compute}), or from the final hidden states through the LM head a block of rows at a time
 * ({@link #throughHead}: what training runs, so the [B·S, V] logits never exist whole).
 */
public final class CausalLmLoss {
    /** Logits widened to float64 at once: 2²¹ (16 MiB of heap; 13 rows of a 152k vocabulary). */
    public static final long BLOCK_ELEMENTS = 1L << 21;

    /**
     * The fewest rows {@link #throughHead} takes through the LM head at once (all of them when there are fewer): each
     * call reads the whole head weight, widening it tile by tile when stored in bf16, so smaller blocks cost time.
     */
    public static final int MIN_HEAD_ROWS = 512;

    private CausalLmLoss() {
    }

    /**
     * @param value   the mean negative log-likelihood
     * @param dLogits [B·S, V] dLoss/dlogits in the logits' type (zero on each window's last row)
     * @param scored  B·(S−1)
     */
    public record Result(double value, INDArray dLogits, long scored) {
    }

    /**
     * Forward and backward together: dlogits[b,s] = (softmax(logits[b,s]) − onehot(token[b,s+1])) / scored.
     *
     * @param logits  [B·S, V], rows batch-major
     * @param windows B windows of S ≥ 2 token ids
     */
    public static Result compute(INDArray logits, int[][] windows) {
        return compute(logits, windows, BLOCK_ELEMENTS);
    }

    /** {@link #compute(INDArray, int[][])} widening at most {@code blockElements} logits at once (whole rows). */
    static Result compute(INDArray logits, int[][] windows, long blockElements) {
        if (logits.rank() != 2) {
            throw new IllegalArgumentException("logits must be [B·S, V], got "
                    + java.util.Arrays.toString(logits.shape()));
        }
        long scored = check(windows, logits.size(0));
        INDArray dLogits = Nd4j.createUninitialized(logits.dataType(), logits.shape(), 'c');          // [B·S, V]
        double total = rows(logits, dLogits, 0, windows, scored, blockElements);
        return new Result(total / scored, dLogits, scored);
    }

    /**
     * The loss through the LM head, with its gradient taken back through the head at once (a fused cross-entropy):
     * for each block of rows of at most {@link Perplexity#LOGIT_BLOCK} logits (and at least {@link #MIN_HEAD_ROWS}
     * rows), logits = hidden·Wᵀ, their dlogits in their place, and those rows of dHidden = dlogits·W. The [B·S, V]
     * logits and their gradient never exist whole: one block does, outside any step workspace (which would keep every
     * block until the step ends), freed before the next. In one block, the loss and dHidden are the bits of {@link #compute} on the whole logits taken
     * back through the head; in several, they agree to float32 rounding (OpenBLAS's product for a row can depend on
     * the rows beside it in the call).
     *
     * @param value   the mean negative log-likelihood
     * @param dHidden [B·S, D] dLoss/dhidden, or null when not asked for
     * @param scored  B·(S−1)
     */
    public record HeadResult(double value, INDArray dHidden, long scored) {
    }

    /**
     * @param hidden  [B·S, D] the final norm's output, rows batch-major
     * @param lmHead  [V, D] the LM head's weight
     * @param windows  B windows of S ≥ 2 token ids
     * @param gradient whether to take dHidden (false: the loss alone, for validation and finite differences)
     */
    public static HeadResult throughHead(INDArray hidden, INDArray lmHead, int[][] windows, boolean gradient) {
        return throughHead(hidden, lmHead, windows, gradient, Perplexity.LOGIT_BLOCK, MIN_HEAD_ROWS);
    }

    /**
     * {@link #throughHead(INDArray, INDArray, int[][], boolean)} with blocks of at most {@code logitBlock} logits and
     * at least {@code minRows} rows.
     */
    static HeadResult throughHead(INDArray hidden, INDArray lmHead, int[][] windows, boolean gradient,
                                  long logitBlock, int minRows) {
        long rows = hidden.size(0);
        long scored = check(windows, rows);
        int vocab = (int) lmHead.size(0);
        long blockRows = headRows(rows, vocab, logitBlock, minRows);
        INDArray dHidden = gradient ? Nd4j.createUninitialized(hidden.dataType(), hidden.shape(), 'c') : null;
        double total = 0;
        for (long first = 0; first < rows; first += blockRows) {
            INDArrayIndex block = NDArrayIndex.interval(first, Math.min(rows, first + blockRows));
            try (MemoryWorkspace outside = StepWorkspace.outside()) {
                INDArray logits = Dense.linear(hidden.get(block, NDArrayIndex.all()), lmHead);      // [rows, V]
                total += rows(logits, logits, first, windows, scored, BLOCK_ELEMENTS);          // dlogits in place
                if (gradient) {
                    Dense.linearBackward(logits, lmHead, dHidden.get(block, NDArrayIndex.all()), false); // [rows, D]
                }
                NativeBuffers.free(logits);
            }
        }
        return new HeadResult(total / scored, dHidden, scored);
    }

    /** Rows of the logits {@link #throughHead} computes at once, of {@code rows} over a vocabulary of {@code vocab}. */
    public static long headRows(long rows, long vocab) {
        return headRows(rows, vocab, Perplexity.LOGIT_BLOCK, MIN_HEAD_ROWS);
    }

    private static long headRows(long rows, long vocab, long logitBlock, int minRows) {
        return Math.max(1, Math.min(rows, Math.max(minRows, logitBlock / vocab)));
    }

    /** B·(S−1), after checking the windows against the B·S rows. */
    private static long check(int[][] windows, long rows) {
        int batch = windows.length;
        int seq = windows[0].length;
        if (seq < 2) {
            throw new IllegalArgumentException("a window needs at least 2 tokens to score one, got " + seq);
        }
        if (rows != (long) batch * seq) {
            throw new IllegalArgumentException(batch + " windows of " + seq + " tokens score " + (long) batch * seq
                    + " rows of logits or hidden states, got " + rows);
        }
        return (long) batch * (seq - 1);
    }

    /**
     * Rows {@code firstRow..} of the whole [B·S, V] logits, given as {@code logits} [n, V]: adds their negative
     * log-likelihoods (returned) and writes their dlogits (divided by {@code scored}) into {@code dLogits} [n, V],
     * which may be {@code logits} itself, widening at most {@code blockElements} logits at once.
     */
    private static double rows(INDArray logits, INDArray dLogits, long firstRow, int[][] windows, long scored,
                               long blockElements) {
        int seq = windows[0].length;
        int vocab = (int) logits.size(1);
        long rows = logits.size(0);
        int blockRows = (int) Math.max(1, blockElements / vocab);
        NativeElements dLogitsOut = NativeElements.of(dLogits);     // its rows written block by block, in place
        float[] narrowed = new float[(int) Math.min(blockRows, rows) * vocab];      // its FLOAT rows, rounded
        double total = 0;
        for (long first = 0; first < rows; first += blockRows) {
            long end = Math.min(rows, first + blockRows);
            INDArrayIndex block = NDArrayIndex.interval(first, end);
            double[] z = Flat.values(logits.get(block, NDArrayIndex.all()));        // [rows, V], becomes dlogits
            for (long r = first; r < end; r++) {
                int row = (int) (r - first) * vocab;
                long at = firstRow + r;                                            // the row of the whole logits
                int b = (int) (at / seq);
                int s = (int) (at % seq);
                if (s + 1 == seq) {
                    java.util.Arrays.fill(z, row, row + vocab, 0.0);
                    continue;
                }
                int target = windows[b][s + 1];
                double max = Double.NEGATIVE_INFINITY;
                for (int i = 0; i < vocab; i++) {
                    max = Math.max(max, z[row + i]);
                }
                double targetLogit = z[row + target];
                VectorRows.expShifted(z, row, vocab, 1.0, max, false);             // e^(z − max), Exp's e^x
                double sum = 0;
                for (int i = 0; i < vocab; i++) {
                    sum += z[row + i];
                }
                total += max + Math.log(sum) - targetLogit;                  // lse − z[target]
                for (int i = 0; i < vocab; i++) {
                    z[row + i] /= sum * scored;
                }
                z[row + target] -= 1.0 / scored;
            }
            dLogitsOut.write(first * vocab, z, (int) (end - first) * vocab, narrowed);
        }
        return total;
    }
}
