package org.sparkmoe.model;

import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.Softmax;
import org.sparkmoe.kernels.StepWorkspace;

/**
 * Per scored token of a batch of windows, how a model's next-token distribution Q differs from a baseline's P (the
 * numbers llama.cpp's {@code perplexity --kl-divergence} prints): KL(P ‖ Q) = Σ_v P_v·(log P_v − log Q_v) over the
 * whole vocabulary, both models' NLL of the true next token, and whether both put the same token first (the first
 * index of the maximum logit, as llama.cpp takes it). Scored positions are {@link Perplexity}'s: 1..S-1 of each
 * window. Log-softmax in float64 from float32 logits; logits are taken in row blocks of at most
 * {@link Perplexity#LOGIT_BLOCK} elements per model, so neither [B·S, V] matrix exists at once, and stay in
 * native memory: their rows are read one at a time into reused Java rows.
 *
 * <p>The two models must share the vocabulary (the caller checks the tokenizer); they may differ in anything else
 * (experts, top-k, adapters).
 */
public final class KlDivergence {
    /**
     * Per scored token, window-major ([B·(S-1)]: window b's token s+1 at b·(S-1) + s).
     *
     * @param kld         KL(P ‖ Q) in nats
     * @param nll         −log Q(true next token)
     * @param baselineNll −log P(true next token)
     * @param sameTop     whether both models' most likely token is the same
     */
    public record Tokens(double[] kld, double[] nll, double[] baselineNll, boolean[] sameTop) {
    }

    private KlDivergence() {
    }

    /** Compares {@code model} at {@code topK} experts per token with {@code baseline} at {@code baselineTopK}. */
    public static Tokens of(MoeTransformer baseline, int baselineTopK, MoeTransformer model, int topK,
                            int[][] windows) {
        return of(baseline, baselineTopK, model, topK, windows, Perplexity.LOGIT_BLOCK);
    }

    /** As {@link #of(MoeTransformer, int, MoeTransformer, int, int[][])}, in blocks of about {@code blockElements}. */
    public static Tokens of(MoeTransformer baseline, int baselineTopK, MoeTransformer model, int topK,
                            int[][] windows, long blockElements) {
        int vocab = model.config().vocab_size;
        if (baseline.config().vocab_size != vocab) {
            throw new IllegalArgumentException("the baseline's vocab_size " + baseline.config().vocab_size
                    + " differs from the model's " + vocab + "; KL divergence needs the same vocabulary");
        }
        INDArray hiddenP = baseline.finalHidden(windows, baselineTopK);            // [B·S, D_base]
        INDArray hiddenQ = model.finalHidden(windows, topK);                       // [B·S, D]
        int seq = windows[0].length;
        int scored = Perplexity.scoredTokens(seq);
        int n = windows.length * scored;
        Tokens out = new Tokens(new double[n], new double[n], new double[n], new boolean[n]);
        long rows = hiddenQ.size(0);
        long block = Math.max(1, blockElements / vocab);
        float[] p = new float[vocab];                                               // one row of each block
        float[] q = new float[vocab];
        double[] terms = new double[vocab];                                         // logSumExp's scratch
        for (long r0 = 0; r0 < rows; r0 += block) {
            long r1 = Math.min(rows, r0 + block);
            try (MemoryWorkspace step = StepWorkspace.step()) {
                NativeElements pBlock = logits(baseline, hiddenP, r0, r1);          // [n, V]
                NativeElements qBlock = logits(model, hiddenQ, r0, r1);             // [n, V]
                for (long r = r0; r < r1; r++) {
                    int b = (int) (r / seq);
                    int s = (int) (r % seq);
                    if (s + 1 < seq) {
                        int i = b * scored + s;
                        int next = windows[b][s + 1];
                        pBlock.readFloats((r - r0) * vocab, p, vocab);
                        qBlock.readFloats((r - r0) * vocab, q, vocab);
                        double lseP = Softmax.logSumExp(p, 0, vocab, terms);
                        double lseQ = Softmax.logSumExp(q, 0, vocab, terms);
                        out.kld[i] = kl(p, q, 0, vocab, lseP, lseQ);
                        out.baselineNll[i] = lseP - p[next];
                        out.nll[i] = lseQ - q[next];
                        out.sameTop[i] = argmax(p, 0, vocab) == argmax(q, 0, vocab);
                    }
                }
            }
        }
        return out;
    }

    private static NativeElements logits(MoeTransformer model, INDArray hidden, long r0, long r1) {
        return NativeElements.of(model.lmHead(hidden.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all())));
    }

    /** Σ_v P_v·(log P_v − log Q_v) for logits rows p, q at {@code at}, given their log-sum-exps. */
    static double kl(float[] p, float[] q, int at, int vocab, double lseP, double lseQ) {
        double sum = 0;
        for (int v = at; v < at + vocab; v++) {
            double logP = p[v] - lseP;
            sum += Math.exp(logP) * (logP - (q[v] - lseQ));
        }
        return sum;
    }

    /** The first index of the largest value in v[at .. at+n), relative to {@code at}. */
    static int argmax(float[] v, int at, int n) {
        int best = 0;
        for (int i = 1; i < n; i++) {
            if (v[at + i] > v[at + best]) {
                best = i;
            }
        }
        return best;
    }
}
