package org.sparkmoe.model;

import java.util.EnumMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.BlockAttention;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.AdapterTerms.Site;
import org.sparkmoe.mumoe.MumoeGradients;
import org.sparkmoe.mumoe.MumoeLayer;
import org.sparkmoe.mumoe.MumoePass;

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
 * An adapter's μMoE terms ({@link AdapterTerms}) may sit beside q_proj, k_proj, v_proj and o_proj: each adds
 * μMoE(input) to its projection's output, and its parameters get gradients ({@link Gradients#terms}).
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
    private final Map<Site, MumoeLayer> terms; // adapter terms beside q/k/v/o_proj, empty for none

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
        this.terms = Map.of();
    }

    private Attention(Attention base, Map<Site, MumoeLayer> terms) {
        this.wq = base.wq;
        this.wk = base.wk;
        this.wv = base.wv;
        this.wo = base.wo;
        this.bq = base.bq;
        this.bk = base.bk;
        this.bv = base.bv;
        this.bo = base.bo;
        this.qNorm = base.qNorm;
        this.kNorm = base.kNorm;
        this.vNorm = base.vNorm;
        this.qLayout = base.qLayout;
        this.kvLayout = base.kvLayout;
        this.attention = base.attention;
        this.terms = Map.copyOf(terms);
    }

    /** This attention (weights shared) with {@code terms} beside its projections instead of its own. */
    @Override
    public Attention withTerms(Map<Site, MumoeLayer> terms) {
        for (Site s : terms.keySet()) {
            if (!s.isAttention()) {
                throw new IllegalArgumentException("an attention takes terms beside q/k/v/o_proj, got " + s.id());
            }
        }
        return new Attention(this, terms);
    }

    /**
     * y [B·S, out] plus the term at {@code site} on its input x, when there is one (inference), showing its gates to
     * {@code inputs}.
     */
    private INDArray plusTerm(Site site, INDArray x, INDArray y, LinearInputs inputs) {
        MumoeLayer term = terms.get(site);
        if (term == null) {
            return y;
        }
        MumoePass pass = term.forward(x);
        inputs.termGates(site, pass.gates());
        return y.addi(pass.y());
    }

    /** As {@link #plusTerm}, keeping the term's pass for the backward in {@code passes}. */
    private INDArray plusTerm(Site site, INDArray x, INDArray y, Map<Site, MumoePass> passes) {
        MumoeLayer term = terms.get(site);
        if (term == null) {
            return y;
        }
        MumoePass pass = term.forward(x);
        passes.put(site, pass);
        return y.addi(pass.y());
    }

    /**
     * dx [B·S, in] of a projection plus, when it has a term, the term's input gradient; the term's parameter
     * gradients go into {@code grads}.
     */
    private INDArray plusTermBackward(Site site, Context ctx, INDArray dy, INDArray dx, Map<Site, MumoeGradients> grads) {
        MumoePass pass = ctx.passes.get(site);
        if (pass == null) {
            return dx;
        }
        MumoeGradients g = terms.get(site).backward(pass, dy);
        grads.put(site, g);
        return dx.addi(g.dx());
    }

    @Override
    public INDArray forward(INDArray x, int batch, int seq, RotaryEmbedding rope, LinearInputs inputs) {
        inputs.add(LinearInputs.Site.ATTN_IN, x);
        INDArray qh = qLayout.split(qNorm.forward(plusTerm(Site.Q_PROJ, x, Dense.linear(x, wq, bq), inputs)), batch, seq,
                rope);                                                                          // [B·H, S, hd]
        INDArray kh = kvLayout.split(kNorm.forward(plusTerm(Site.K_PROJ, x, Dense.linear(x, wk, bk), inputs)), batch, seq,
                rope);                                                                          // [B·KVH, S, hd]
        INDArray vh = kvLayout.split(vNorm.forward(plusTerm(Site.V_PROJ, x, Dense.linear(x, wv, bv), inputs)), batch, seq,
                null);                                                                          // [B·KVH, S, hd]
        INDArray context = attention.forward(qh, kh, vh, qLayout.count(), kvLayout.count()).out(); // [B·H, S, hd]
        INDArray merged = qLayout.merge(context, batch, seq, null);                             // [B·S, H·hd]
        inputs.add(LinearInputs.Site.ATTN_OUT, merged);
        return plusTerm(Site.O_PROJ, merged, Dense.linear(merged, wo, bo), inputs);
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
        private final Map<Site, MumoePass> passes; // the adapter terms' forward passes, by site

        private Context(int batch, int seq, RotaryEmbedding rope, ProjectionNorm.Forward qNormed,
                        ProjectionNorm.Forward kNormed, ProjectionNorm.Forward vNormed, INDArray qh, INDArray kh,
                        INDArray vh, BlockAttention.Forward attended, INDArray out, Map<Site, MumoePass> passes) {
            this.passes = Map.copyOf(passes);
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
        Map<Site, MumoePass> passes = new EnumMap<>(Site.class);
        ProjectionNorm.Forward qNormed = qNorm.forwardTraining(
                plusTerm(Site.Q_PROJ, x, Dense.linear(x, wq, bq), passes));             // [B·S, H·hd]
        ProjectionNorm.Forward kNormed = kNorm.forwardTraining(
                plusTerm(Site.K_PROJ, x, Dense.linear(x, wk, bk), passes));             // [B·S, KVH·hd]
        ProjectionNorm.Forward vNormed = vNorm.forwardTraining(
                plusTerm(Site.V_PROJ, x, Dense.linear(x, wv, bv), passes));             // [B·S, KVH·hd]
        INDArray qh = qLayout.split(qNormed.out(), batch, seq, rope);                           // [B·H, S, hd]
        INDArray kh = kvLayout.split(kNormed.out(), batch, seq, rope);                          // [B·KVH, S, hd]
        INDArray vh = kvLayout.split(vNormed.out(), batch, seq, null);                          // [B·KVH, S, hd]
        BlockAttention.Forward attended = attention.forward(qh, kh, vh, qLayout.count(), kvLayout.count());
        INDArray merged = qLayout.merge(attended.out(), batch, seq, null);                      // [B·S, H·hd]
        INDArray out = plusTerm(Site.O_PROJ, merged, Dense.linear(merged, wo, bo), passes);   // [B·S, D]
        return new Context(batch, seq, rope, qNormed, kNormed, vNormed, qh, kh, vh, attended, out, passes);
    }

    /**
     * @param dx     [B·S, D]
     * @param dSinks [H] the gradient of the sink logits, null without sinks
     * @param terms  the gradients of the adapter terms, by site (empty without terms)
     */
    public record Gradients(INDArray dx, double[] dSinks, Map<Site, MumoeGradients> terms) {
    }

    @Override
    public INDArray backward(SelfAttention.Context context, INDArray dOut) {
        return backwardWithSinks((Context) context, dOut).dx();
    }

    @Override
    public INDArray backward(SelfAttention.Context context, INDArray dOut, Map<Site, MumoeGradients> termGradients) {
        Gradients g = backwardWithSinks((Context) context, dOut);
        termGradients.putAll(g.terms());
        return g.dx();
    }

    /**
     * The mirror of {@link #forwardTraining}, step by step in reverse, with the gradient of the sinks.
     *
     * @param dOut [B·S, D]
     */
    public Gradients backwardWithSinks(Context ctx, INDArray dOut) {
        int batch = ctx.batch;
        int seq = ctx.seq;
        Map<Site, MumoeGradients> termGrads = new EnumMap<>(Site.class);
        // out = merged·Woᵀ (+ bo) (+ μMoE(merged))  →  dmerged = dOut·Wo (+ the term's dx), then → [B·H, S, hd]
        INDArray dMerged = plusTermBackward(Site.O_PROJ, ctx, dOut, Dense.linearBackward(dOut, wo), termGrads);
        INDArray dContext = qLayout.split(dMerged, batch, seq, null);                           // [B·H, S, hd]

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
        // the terms beside q/k/v_proj read x too: dx += each term's dx
        for (Site s : new Site[] {Site.Q_PROJ, Site.K_PROJ, Site.V_PROJ}) {
            plusTermBackward(s, ctx, s == Site.Q_PROJ ? dqLinear : s == Site.K_PROJ ? dkLinear : dvLinear, dx,
                    termGrads);
        }
        return new Gradients(dx, g.dSinks(), termGrads);
    }
}
