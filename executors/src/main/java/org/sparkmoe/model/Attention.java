package org.sparkmoe.model;

import java.util.EnumMap;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
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
 * B independent sequences of S tokens are processed together; rows are batch-major [B·S, ·]. The training pair
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
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final CausalSoftmax softmax;
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
        this.heads = heads;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.softmax = new CausalSoftmax(1.0 / Math.sqrt(headDim), slidingWindow,
                sinks == null ? null : Flat.values(sinks));
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
        this.heads = base.heads;
        this.kvHeads = base.kvHeads;
        this.headDim = base.headDim;
        this.softmax = base.softmax;
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

    /** y [B·S, out] plus the term at {@code site} on its input x, when there is one (inference). */
    private INDArray plusTerm(Site site, INDArray x, INDArray y) {
        MumoeLayer term = terms.get(site);
        return term == null ? y : y.addi(term.forward(x).y());
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
        float[] q = toHeads(qNorm.forward(plusTerm(Site.Q_PROJ, x, Dense.linear(x, wq, bq))), batch, seq, heads,
                rope);                                                                  // [B, H, S, hd]
        float[] k = toHeads(kNorm.forward(plusTerm(Site.K_PROJ, x, Dense.linear(x, wk, bk))), batch, seq, kvHeads,
                rope);                                                                  // [B, KVH, S, hd]
        float[] v = toHeads(vNorm.forward(plusTerm(Site.V_PROJ, x, Dense.linear(x, wv, bv))), batch, seq, kvHeads,
                null);                                                                  // [B, KVH, S, hd]
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
        INDArray probs = Nd4j.create(softmax.apply(scores.data().asFloat(), batch * heads, seq),
                new long[] {(long) batch * heads, seq, seq}, 'c');
        INDArray context = Nd4j.createUninitialized(DataType.FLOAT, new long[] {(long) batch * heads, seq, headDim}, 'c');
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                Nd4j.gemm(probs.slice(b * heads + h), vh.slice(b * kvHeads + h / group), context.slice(b * heads + h),
                        false, false, 1.0, 0.0);                                    // [S, hd] = p·v
            }
        }
        INDArray merged = fromHeads(context.data().asFloat(), batch, seq);              // [B·S, H·hd]
        inputs.add(LinearInputs.Site.ATTN_OUT, merged);
        return plusTerm(Site.O_PROJ, merged, Dense.linear(merged, wo, bo));
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

    /** The forward result and what {@link #backward} needs; immutable once built. */
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
        private final INDArray probs;   // [B·H, S, S] causal softmax, zero outside the window
        private final INDArray out;     // [B·S, D]
        private final Map<Site, MumoePass> passes; // the adapter terms' forward passes, by site

        private Context(int batch, int seq, RotaryEmbedding rope, ProjectionNorm.Forward qNormed,
                        ProjectionNorm.Forward kNormed, ProjectionNorm.Forward vNormed, INDArray qh, INDArray kh,
                        INDArray vh, INDArray probs, INDArray out, Map<Site, MumoePass> passes) {
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
            this.probs = probs;
            this.out = out;
        }

        @Override
        public INDArray out() {
            return out;
        }
    }

    @Override
    public Context forwardTraining(INDArray x, int batch, int seq, RotaryEmbedding rope) {
        DataType dt = x.dataType();
        boolean single = dt == DataType.FLOAT;
        long[] qShape = {(long) batch * heads, seq, headDim};
        long[] kvShape = {(long) batch * kvHeads, seq, headDim};
        Map<Site, MumoePass> passes = new EnumMap<>(Site.class);
        ProjectionNorm.Forward qNormed = qNorm.forwardTraining(
                plusTerm(Site.Q_PROJ, x, Dense.linear(x, wq, bq), passes));             // [B·S, H·hd]
        ProjectionNorm.Forward kNormed = kNorm.forwardTraining(
                plusTerm(Site.K_PROJ, x, Dense.linear(x, wk, bk), passes));             // [B·S, KVH·hd]
        ProjectionNorm.Forward vNormed = vNorm.forwardTraining(
                plusTerm(Site.V_PROJ, x, Dense.linear(x, wv, bv), passes));             // [B·S, KVH·hd]
        INDArray qh = Flat.array(splitHeads(Flat.values(qNormed.out()), batch, seq, heads, rope, single),
                qShape, dt);                                                            // [B·H, S, hd]
        INDArray kh = Flat.array(splitHeads(Flat.values(kNormed.out()), batch, seq, kvHeads, rope, single),
                kvShape, dt);                                                           // [B·KVH, S, hd]
        INDArray vh = Flat.array(splitHeads(Flat.values(vNormed.out()), batch, seq, kvHeads, null, single),
                kvShape, dt);                                                           // [B·KVH, S, hd]
        int group = heads / kvHeads;

        INDArray scores = Nd4j.createUninitialized(dt, new long[] {(long) batch * heads, seq, seq}, 'c');
        for (int bh = 0; bh < batch * heads; bh++) {
            int kv = bh / heads * kvHeads + bh % heads / group;
            Nd4j.gemm(qh.slice(bh), kh.slice(kv), scores.slice(bh), false, true, 1.0, 0.0);    // [S, S] = q·kᵀ
        }
        double[] p = Flat.values(scores);
        softmax.apply(p, batch * heads, seq, single);
        INDArray probs = Flat.array(p, scores.shape(), dt);                             // [B·H, S, S]
        INDArray context = Nd4j.createUninitialized(dt, qShape, 'c');                   // [B·H, S, hd]
        for (int bh = 0; bh < batch * heads; bh++) {
            int kv = bh / heads * kvHeads + bh % heads / group;
            Nd4j.gemm(probs.slice(bh), vh.slice(kv), context.slice(bh), false, false, 1.0, 0.0);  // [S, hd] = p·v
        }
        INDArray merged = Flat.array(mergeHeads(Flat.values(context), batch, seq, heads, null),
                new long[] {(long) batch * seq, (long) heads * headDim}, dt);          // [B·S, H·hd]
        INDArray out = plusTerm(Site.O_PROJ, merged, Dense.linear(merged, wo, bo), passes);   // [B·S, D]
        return new Context(batch, seq, rope, qNormed, kNormed, vNormed, qh, kh, vh, probs, out, passes);
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
        DataType dt = dOut.dataType();
        int batch = ctx.batch;
        int seq = ctx.seq;
        int group = heads / kvHeads;
        Map<Site, MumoeGradients> termGrads = new EnumMap<>(Site.class);
        // out = merged·Woᵀ (+ bo) (+ μMoE(merged))  →  dmerged = dOut·Wo (+ the term's dx), then → [B·H, S, hd]
        INDArray dMerged = plusTermBackward(Site.O_PROJ, ctx, dOut, Dense.linearBackward(dOut, wo), termGrads);
        INDArray dContext = Flat.array(splitHeads(Flat.values(dMerged), batch, seq, heads,
                null, false), ctx.qh.shape(), dt);                                      // [B·H, S, hd]

        // context = p·v  →  dp = dcontext·vᵀ, dv += pᵀ·dcontext (query heads of a group share one KV head)
        INDArray dProbs = Nd4j.createUninitialized(dt, ctx.probs.shape(), 'c');         // [B·H, S, S]
        INDArray dv = Nd4j.zeros(dt, ctx.vh.shape());                                   // [B·KVH, S, hd]
        for (int bh = 0; bh < batch * heads; bh++) {
            int kv = bh / heads * kvHeads + bh % heads / group;
            Nd4j.gemm(dContext.slice(bh), ctx.vh.slice(kv), dProbs.slice(bh), false, true, 1.0, 0.0);
            Nd4j.gemm(ctx.probs.slice(bh), dContext.slice(bh), dv.slice(kv), true, false, 1.0, 1.0);
        }

        // p = causal softmax(scores · hd^-½)  →  dscores
        double[] p = Flat.values(ctx.probs);
        double[] dScores = Flat.values(dProbs);
        double[] dSinks = softmax.backward(p, dScores, batch * heads, seq);
        INDArray dS = Flat.array(dScores, ctx.probs.shape(), dt);                       // [B·H, S, S]

        // scores = q·kᵀ  →  dq = dscores·k, dk += dscoresᵀ·q
        INDArray dq = Nd4j.createUninitialized(dt, ctx.qh.shape(), 'c');                // [B·H, S, hd]
        INDArray dk = Nd4j.zeros(dt, ctx.kh.shape());                                   // [B·KVH, S, hd]
        for (int bh = 0; bh < batch * heads; bh++) {
            int kv = bh / heads * kvHeads + bh % heads / group;
            Nd4j.gemm(dS.slice(bh), ctx.kh.slice(kv), dq.slice(bh), false, false, 1.0, 0.0);
            Nd4j.gemm(dS.slice(bh), ctx.qh.slice(bh), dk.slice(kv), true, false, 1.0, 1.0);
        }

        // heads, RoPE, the q/k/v norms and clamps, and the q/k/v projections  →  dx = dq·Wq + dk·Wk + dv·Wv
        long rows = (long) batch * seq;
        INDArray dqLinear = qNorm.backward(ctx.qNormed, Flat.array(mergeHeads(Flat.values(dq), batch, seq, heads,
                ctx.rope), new long[] {rows, wq.size(0)}, dt));                        // [B·S, H·hd]
        INDArray dkLinear = kNorm.backward(ctx.kNormed, Flat.array(mergeHeads(Flat.values(dk), batch, seq, kvHeads,
                ctx.rope), new long[] {rows, wk.size(0)}, dt));                        // [B·S, KVH·hd]
        INDArray dvLinear = vNorm.backward(ctx.vNormed, Flat.array(mergeHeads(Flat.values(dv), batch, seq, kvHeads,
                null), new long[] {rows, wv.size(0)}, dt));                            // [B·S, KVH·hd]
        INDArray dx = Dense.linearBackward(dqLinear, wq);                               // [B·S, D]
        Dense.linearBackward(dkLinear, wk, dx, true);
        Dense.linearBackward(dvLinear, wv, dx, true);
        // the terms beside q/k/v_proj read x too: dx += each term's dx
        for (Site s : new Site[] {Site.Q_PROJ, Site.K_PROJ, Site.V_PROJ}) {
            plusTermBackward(s, ctx, s == Site.Q_PROJ ? dqLinear : s == Site.K_PROJ ? dkLinear : dvLinear, dx,
                    termGrads);
        }
        return new Gradients(dx, dSinks, termGrads);
    }

    /** [B·S, n·hd] → [B, n, S, hd], rotated by position when {@code rope} is given. */
    private double[] splitHeads(double[] src, int batch, int seq, int n, RotaryEmbedding rope, boolean single) {
        double[] dst = new double[src.length];
        for (int b = 0; b < batch; b++) {
            for (int s = 0; s < seq; s++) {
                int srcRow = (b * seq + s) * n * headDim;
                for (int h = 0; h < n; h++) {
                    int srcAt = srcRow + h * headDim;
                    int dstAt = ((b * n + h) * seq + s) * headDim;
                    if (rope == null) {
                        System.arraycopy(src, srcAt, dst, dstAt, headDim);
                    } else {
                        rope.rotate(src, srcAt, dst, dstAt, s, single);
                    }
                }
            }
        }
        return dst;
    }

    /** [B, n, S, hd] → [B·S, n·hd], rotated back by position when {@code rope} is given (a gradient). */
    private double[] mergeHeads(double[] src, int batch, int seq, int n, RotaryEmbedding rope) {
        double[] dst = new double[src.length];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < n; h++) {
                for (int s = 0; s < seq; s++) {
                    int srcAt = ((b * n + h) * seq + s) * headDim;
                    int dstAt = (b * seq + s) * n * headDim + h * headDim;
                    if (rope == null) {
                        System.arraycopy(src, srcAt, dst, dstAt, headDim);
                    } else {
                        rope.rotateBack(src, srcAt, dst, dstAt, s);
                    }
                }
            }
        }
        return dst;
    }
}
