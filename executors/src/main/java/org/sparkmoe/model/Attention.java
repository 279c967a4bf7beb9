package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.BlockAttention;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;

/**
 * Causal grouped-query self-attention with RoPE, as transformers' eager attention in float32:
 * {@code softmax(q·kᵀ · hd^-½ + causal mask) · v}, KV heads shared by H/KVH query heads each.
 * Before the heads are split, the q, k and v projections pass through a {@link ProjectionNorm} each (Qwen3's per-head
 * q/k RMSNorm, OLMoE's whole-projection q/k RMSNorm and clip_qkv clamp; the identity for the others); the output
 * projection may carry a bias (attention_bias).
 * gpt-oss adds a learned sink logit per head: it joins every softmax row's normaliser and is dropped after, so a row's
 * probabilities sum to less than 1 ({@code softmax([q·kᵀ·hd^-½ + mask, sink_h])[:-1]}); and its layers alternate a
 * sliding window (keys kv > q − window, transformers' sliding-window mask) with full attention (one window per layer).
 * B independent sequences of S tokens are processed together; rows are batch-major [B·S, ·]. The softmax and the
 * product with v run block by block ({@link BlockAttention}: online softmax, no [S, S] matrix in the forward or
 * the backward; the training context keeps q, k, v, the per-head output and each row's log-sum-exp). The training pair
 * ({@link #forwardTraining}, {@link #backward}) takes FLOAT or DOUBLE (weights of the same type) and in FLOAT is
 * bit-identical to {@link #forward}; the weights, biases and sinks are frozen (training adapts the experts and the
 * router), the input gets a gradient and so do the sinks (returned, checked by finite differences, not applied).
 */
public final class Attention implements SelfAttention {
    private final INDArray wq; // [H·hd, D]
    private final INDArray wk; // [KVH·hd, D]
    private final INDArray wv; // [KVH·hd, D]
    private final INDArray wo; // [D, H·hd]
    private final INDArray bq, bk, bv; // [H·hd], [KVH·hd], [KVH·hd] or null
    private final INDArray bo;         // [D] or null
    private final ProjectionNorm qNorm, kNorm, vNorm;
    private final HeadLayout qLayout;   // H heads of hd
    private final HeadLayout kvLayout;  // KVH heads of hd
    private final BlockAttention attention;

    /** Attention without an output bias, q/k/v norms or sinks (Mixtral, Qwen2-MoE, Mistral). */
    public Attention(INDArray wq, INDArray wk, INDArray wv, INDArray wo, INDArray bq, INDArray bk, INDArray bv,
                     int heads, int kvHeads, int headDim, Integer slidingWindow) {
        this(wq, wk, wv, wo, bq, bk, bv, null, ProjectionNorm.IDENTITY, ProjectionNorm.IDENTITY,
                ProjectionNorm.IDENTITY, heads, kvHeads, headDim, slidingWindow, null);
    }

    /**
     * @param bo    output projection bias [D] or null
     * @param qNorm applied to q [B·S, H·hd] before the split (Qwen3, OLMoE), or {@link ProjectionNorm#IDENTITY}
     * @param kNorm applied to k [B·S, KVH·hd] likewise
     * @param vNorm applied to v [B·S, KVH·hd] likewise (OLMoE's clamp)
     * @param slidingWindow this layer's window (keys kv > q − window), or null for full causal attention
     * @param sinks the per-head sink logits [H] (gpt-oss {@code self_attn.sinks}), or null
     */
    public Attention(INDArray wq, INDArray wk, INDArray wv, INDArray wo, INDArray bq, INDArray bk, INDArray bv,
                     INDArray bo, ProjectionNorm qNorm, ProjectionNorm kNorm, ProjectionNorm vNorm,
                     int heads, int kvHeads, int headDim, Integer slidingWindow, INDArray sinks) {
        this(wq, wk, wv, wo, bq, bk, bv, bo, qNorm, kNorm, vNorm, heads, kvHeads, headDim, slidingWindow, sinks,
                BlockAttention.BLOCK, BlockAttention.BLOCK);
    }

    /** With explicit attention block sizes ({@link BlockAttention}); tests use small ones that do not divide S. */
    Attention(INDArray wq, INDArray wk, INDArray wv, INDArray wo, INDArray bq, INDArray bk, INDArray bv,
              INDArray bo, ProjectionNorm qNorm, ProjectionNorm kNorm, ProjectionNorm vNorm,
              int heads, int kvHeads, int headDim, Integer slidingWindow, INDArray sinks, int queryBlock,
              int keyBlock) {
        if (sinks != null && sinks.length() != heads) {
            throw new IllegalArgumentException("attention sinks must have one logit per head, H = " + heads
                    + ", got " + sinks.length());
        }
        this.bo = bo;
        this.qNorm = qNorm;
        this.kNorm = kNorm;
        this.vNorm = vNorm;
        this.wq = wq;
        this.wk = wk;
        this.wv = wv;
        this.wo = wo;
        this.bq = bq;
        this.bk = bk;
        this.bv = bv;
        this.qLayout = new HeadLayout(heads, headDim);
        this.kvLayout = new HeadLayout(kvHeads, headDim);
        this.attention = new BlockAttention(1.0 / Math.sqrt(headDim), slidingWindow,
                sinks == null ? null : Flat.values(sinks), queryBlock, keyBlock);
    }

    @Override
    public INDArray forward(INDArray x, int batch, int seq, RotaryEmbedding rope) {
        INDArray qh = qLayout.split(qNorm.forward(Dense.linear(x, wq, bq)), batch, seq, rope);  // [B·H, S, hd]
        INDArray kh = kvLayout.split(kNorm.forward(Dense.linear(x, wk, bk)), batch, seq, rope); // [B·KVH, S, hd]
        INDArray vh = kvLayout.split(vNorm.forward(Dense.linear(x, wv, bv)), batch, seq, null); // [B·KVH, S, hd]
        INDArray context = attention.forward(qh, kh, vh, qLayout.count(), kvLayout.count()).out(); // [B·H, S, hd]
        return Dense.linear(qLayout.merge(context, batch, seq, null), wo, bo);
    }

    /** The forward result and what {@link #backward} needs (O(S·hd) per head, no [S, S]); immutable once built. */
    public static final class Context implements SelfAttention.Context {
        private final int batch;
        private final int seq;
        private final RotaryEmbedding rope;
        private final ProjectionNorm.Forward qNormed;  // [B·S, H·hd]
        private final ProjectionNorm.Forward kNormed;  // [B·S, KVH·hd]
        private final ProjectionNorm.Forward vNormed;  // [B·S, KVH·hd]
        private final INDArray qh;      // [B·H, S, hd] rotated
        private final INDArray kh;      // [B·KVH, S, hd] rotated
        private final INDArray vh;      // [B·KVH, S, hd]
        private final BlockAttention.Forward attended;  // context [B·H, S, hd] and lse [B·H·S]
        private final INDArray out;     // [B·S, D]

        private Context(int batch, int seq, RotaryEmbedding rope, ProjectionNorm.Forward qNormed,
                        ProjectionNorm.Forward kNormed, ProjectionNorm.Forward vNormed, INDArray qh, INDArray kh,
                        INDArray vh, BlockAttention.Forward attended, INDArray out) {
            this.batch = batch;
            this.seq = seq;
            this.rope = rope;
            this.qNormed = qNormed;
            this.kNormed = kNormed;
            this.vNormed = vNormed;
            this.qh = qh;
            this.kh = kh;
            this.vh = vh;
            this.attended = attended;
            this.out = out;
        }

        @Override
        public INDArray out() {
            return out;
        }
    }

    @Override
    public Context forwardTraining(INDArray x, int batch, int seq, RotaryEmbedding rope) {
        ProjectionNorm.Forward qNormed = qNorm.forwardTraining(Dense.linear(x, wq, bq));     // [B·S, H·hd]
        ProjectionNorm.Forward kNormed = kNorm.forwardTraining(Dense.linear(x, wk, bk));     // [B·S, KVH·hd]
        ProjectionNorm.Forward vNormed = vNorm.forwardTraining(Dense.linear(x, wv, bv));     // [B·S, KVH·hd]
        INDArray qh = qLayout.split(qNormed.out(), batch, seq, rope);                           // [B·H, S, hd]
        INDArray kh = kvLayout.split(kNormed.out(), batch, seq, rope);                          // [B·KVH, S, hd]
        INDArray vh = kvLayout.split(vNormed.out(), batch, seq, null);                          // [B·KVH, S, hd]
        BlockAttention.Forward attended = attention.forward(qh, kh, vh, qLayout.count(), kvLayout.count());
        INDArray merged = qLayout.merge(attended.out(), batch, seq, null);                      // [B·S, H·hd]
        return new Context(batch, seq, rope, qNormed, kNormed, vNormed, qh, kh, vh, attended,
                Dense.linear(merged, wo, bo));
    }

    /**
     * @param dx     [B·S, D]
     * @param dSinks [H] the gradient of the sink logits, null without sinks
     */
    public record Gradients(INDArray dx, double[] dSinks) {
    }

    @Override
    public INDArray backward(SelfAttention.Context context, INDArray dOut) {
        return backwardWithSinks((Context) context, dOut).dx();
    }

    /**
     * The mirror of {@link #forwardTraining}, step by step in reverse, with the gradient of the sinks.
     *
     * @param dOut [B·S, D]
     */
    public Gradients backwardWithSinks(Context ctx, INDArray dOut) {
        int batch = ctx.batch;
        int seq = ctx.seq;
        // out = merged·Woᵀ (+ bo)  →  dmerged = dOut·Wo, then [B·S, H·hd] → [B·H, S, hd]
        INDArray dContext = qLayout.split(Dense.linearBackward(dOut, wo), batch, seq, null);    // [B·H, S, hd]

        // context = softmax(q·kᵀ · hd^-½ + mask)·v, block by block  →  dq, dk, dv (and the sinks')
        BlockAttention.Gradients g = attention.backward(ctx.qh, ctx.kh, ctx.vh, qLayout.count(), kvLayout.count(),
                ctx.attended, dContext);

        // heads, RoPE, the q/k/v norms and clamps, and the q/k/v projections  →  dx = dq·Wq + dk·Wk + dv·Wv
        INDArray dqLinear = qNorm.backward(ctx.qNormed, qLayout.merge(g.dq(), batch, seq, ctx.rope)); // [B·S, H·hd]
        INDArray dkLinear = kNorm.backward(ctx.kNormed, kvLayout.merge(g.dk(), batch, seq, ctx.rope)); // [B·S, KVH·hd]
        INDArray dvLinear = vNorm.backward(ctx.vNormed, kvLayout.merge(g.dv(), batch, seq, null)); // [B·S, KVH·hd]
        INDArray dx = Dense.linearBackward(dqLinear, wq);                               // [B·S, D]
        Dense.linearBackward(dkLinear, wk, dx, true);
        Dense.linearBackward(dvLinear, wv, dx, true);
        return new Gradients(dx, g.dSinks());
    }
}
