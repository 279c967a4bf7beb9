package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Softmax;

/**
 * Causal grouped-query self-attention with RoPE, as transformers' eager attention in float32:
 * {@code softmax(q·kᵀ · hd^-½ + causal mask) · v}, KV heads shared by H/KVH query heads each.
 * B independent sequences of S tokens are processed together; rows are batch-major [B·S, ·].
 */
public final class Attention {
    private final INDArray wq; // [H·hd, D]
    private final INDArray wk; // [KVH·hd, D]
    private final INDArray wv; // [KVH·hd, D]
    private final INDArray wo; // [D, H·hd]
    private final INDArray bq, bk, bv; // [H·hd], [KVH·hd], [KVH·hd] or null
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final Integer slidingWindow;

    public Attention(INDArray wq, INDArray wk, INDArray wv, INDArray wo, INDArray bq, INDArray bk, INDArray bv,
                     int heads, int kvHeads, int headDim, Integer slidingWindow) {
        this.wq = wq;
        this.wk = wk;
        this.wv = wv;
        this.wo = wo;
        this.bq = bq;
        this.bk = bk;
        this.bv = bv;
        this.heads = heads;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.slidingWindow = slidingWindow;
    }

    /** x [B·S, D] → [B·S, D]. */
    public INDArray forward(INDArray x, int batch, int seq, RotaryEmbedding rope) {
        float[] q = toHeads(Dense.linear(x, wq, bq), batch, seq, heads, rope);     // [B, H, S, hd]
        float[] k = toHeads(Dense.linear(x, wk, bk), batch, seq, kvHeads, rope);   // [B, KVH, S, hd]
        float[] v = toHeads(Dense.linear(x, wv, bv), batch, seq, kvHeads, null);   // [B, KVH, S, hd]
        INDArray qh = Nd4j.create(q, new long[] {(long) batch * heads, seq, headDim}, 'c');
        INDArray kh = Nd4j.create(k, new long[] {(long) batch * kvHeads, seq, headDim}, 'c');
        INDArray vh = Nd4j.create(v, new long[] {(long) batch * kvHeads, seq, headDim}, 'c');
        int group = heads / kvHeads;

        INDArray scores = Nd4j.createUninitialized(DataType.FLOAT, new long[] {(long) batch * heads, seq, seq}, 'c');
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                Nd4j.gemm(qh.slice(b * heads + h), kh.slice(b * kvHeads + h / group), scores.slice(b * heads + h),
                        false, true, 1.0, 0.0);                                     // [S, S] = q·kᵀ
            }
        }
        INDArray probs = Nd4j.create(causalSoftmax(scores.data().asFloat(), batch * heads, seq),
                new long[] {(long) batch * heads, seq, seq}, 'c');
        INDArray context = Nd4j.createUninitialized(DataType.FLOAT, new long[] {(long) batch * heads, seq, headDim}, 'c');
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                Nd4j.gemm(probs.slice(b * heads + h), vh.slice(b * kvHeads + h / group), context.slice(b * heads + h),
                        false, false, 1.0, 0.0);                                    // [S, hd] = p·v
            }
        }
        return Dense.linear(fromHeads(context.data().asFloat(), batch, seq), wo);
    }

    /** [B·S, n·hd] → [B, n, S, hd], rotated by position when {@code rope} is given. */
    private float[] toHeads(INDArray projected, int batch, int seq, int n, RotaryEmbedding rope) {
        float[] src = projected.data().asFloat();
        float[] dst = new float[src.length];
        for (int b = 0; b < batch; b++) {
            for (int s = 0; s < seq; s++) {
                int srcRow = (b * seq + s) * n * headDim;
                for (int h = 0; h < n; h++) {
                    int srcAt = srcRow + h * headDim;
                    int dstAt = ((b * n + h) * seq + s) * headDim;
                    if (rope == null) {
                        System.arraycopy(src, srcAt, dst, dstAt, headDim);
                    } else {
                        rope.rotate(src, srcAt, dst, dstAt, s);
                    }
                }
            }
        }
        return dst;
    }

    /** [B, H, S, hd] → [B·S, H·hd]. */
    private INDArray fromHeads(float[] ctx, int batch, int seq) {
        float[] out = new float[ctx.length];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                for (int s = 0; s < seq; s++) {
                    System.arraycopy(ctx, ((b * heads + h) * seq + s) * headDim,
                            out, (b * seq + s) * heads * headDim + h * headDim, headDim);
                }
            }
        }
        return Nd4j.create(out, new long[] {(long) batch * seq, (long) heads * headDim}, 'c');
    }

    /** Scales by hd^-½ and applies the causal (optionally sliding-window) softmax to every [S, S] score matrix. */
    private float[] causalSoftmax(float[] scores, int matrices, int seq) {
        float scale = (float) (1.0 / Math.sqrt(headDim));
        for (int m = 0; m < matrices; m++) {
            for (int i = 0; i < seq; i++) {
                int row = (m * seq + i) * seq;
                int first = slidingWindow == null ? 0 : Math.max(0, i - slidingWindow + 1);
                for (int j = first; j <= i; j++) {
                    scores[row + j] *= scale;
                }
                Softmax.row(scores, row + first, i - first + 1, scores, row + first);
                java.util.Arrays.fill(scores, row, row + first, 0f);
                java.util.Arrays.fill(scores, row + i + 1, row + seq, 0f);
            }
        }
        return scores;
    }
}
