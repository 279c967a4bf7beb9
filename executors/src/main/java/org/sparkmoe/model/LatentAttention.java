package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.BlockAttention;
import org.sparkmoe.kernels.Dense;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * DeepSeek's multi-head latent attention (MLA) as transformers' {@code DeepseekV2Attention} /
 * {@code DeepseekV3Attention} compute it (eager, float32). H heads; per head a query/key of dn + dr values (the
 * no-rope part, then the rope part) and a value of dv; C = kv_lora_rank, Q = q_lora_rank:
 * <pre>
 *   q  [T, H·(dn+dr)] = x·Wqᵀ, or with q_lora: q_a_layernorm(x·Wqaᵀ (+bqa))·Wqbᵀ
 *   c  [T, C+dr]      = x·Wkvaᵀ (+bkva) = [latent [T, C] | kr [T, dr]]
 *   kv [T, H·(dn+dv)] = kv_a_layernorm(latent)·Wkvbᵀ = per head [k_nope [dn] | v [dv]]
 *   head h: q = (q_nope, rope(q_rope)), k = (k_nope, rope(kr)) — one rope key shared by every head — and v
 *   out [T, D] = (causal softmax(q·kᵀ · scale) · v) merged to [T, H·dv] · Woᵀ (+bo)
 * </pre>
 * scale = (dn + dr)^-½, times YaRN's mscale(s, mscale_all_dim)² under YaRN. The q_a and kv_a layernorms use eps
 * 1e-6 whatever rms_norm_eps says. {@link #forward} is the training forward's output in float32, so the two are
 * bit-identical by construction; the weights are frozen, only the input gets a gradient. Heads are split and merged
 * by {@link HeadLayout} in the input's own type (FLOAT or DOUBLE, no float64 copies) and attended by the same
 * {@link BlockAttention} as {@link Attention}.
 */
public final class LatentAttention implements SelfAttention {

    /**
     * The weights of one MLA layer.
     *
     * @param wq      q_proj [H·(dn+dr), D], or null with q_lora
     * @param wqA     q_a_proj [Q, D], or null without q_lora
     * @param bqA     q_a_proj bias [Q] (attention_bias), or null
     * @param qANorm  q_a_layernorm over Q, or null without q_lora
     * @param wqB     q_b_proj [H·(dn+dr), Q], or null without q_lora
     * @param wkvA    kv_a_proj_with_mqa [C+dr, D]
     * @param bkvA    its bias [C+dr] (attention_bias), or null
     * @param kvANorm kv_a_layernorm over C
     * @param wkvB    kv_b_proj [H·(dn+dv), C]
     * @param wo      o_proj [D, H·dv]
     * @param bo      its bias [D] (attention_bias), or null
     */
    public record Weights(INDArray wq, INDArray wqA, INDArray bqA, RmsNorm qANorm, INDArray wqB, INDArray wkvA,
                          INDArray bkvA, RmsNorm kvANorm, INDArray wkvB, INDArray wo, INDArray bo) {
        public Weights {
            if ((wq == null) == (wqA == null) || (wqA == null) != (wqB == null) || (wqA == null) != (qANorm == null)) {
                throw new IllegalArgumentException("MLA takes either q_proj or q_a_proj, q_a_layernorm and q_b_proj");
            }
        }
    }

    private final Weights w;
    private final int heads;
    private final int nopeDim;  // dn
    private final int ropeDim;  // dr
    private final int valueDim; // dv
    private final int latentDim; // C
    private final HeadLayout qkLayout;    // H heads of dn+dr, RoPE on the last dr
    private final HeadLayout vLayout;     // H heads of dv
    private final HeadLayout ropeLayout;  // the one shared rope key of dr
    private final BlockAttention attention;

    /**
     * @param scale the softmax scale: (dn + dr)^-½, with YaRN's factor (see {@code YarnScaling#softmaxScale})
     */
    public LatentAttention(Weights w, int heads, int nopeDim, int ropeDim, int valueDim, double scale) {
        this(w, heads, nopeDim, ropeDim, valueDim, scale, BlockAttention.BLOCK, BlockAttention.BLOCK);
    }

    /** With explicit attention block sizes ({@link BlockAttention}); tests use small ones that do not divide S. */
    LatentAttention(Weights w, int heads, int nopeDim, int ropeDim, int valueDim, double scale, int queryBlock,
                    int keyBlock) {
        this.w = w;
        this.heads = heads;
        this.nopeDim = nopeDim;
        this.ropeDim = ropeDim;
        this.valueDim = valueDim;
        this.latentDim = Math.toIntExact(w.wkvB().size(1));
        long qRows = (w.wq() != null ? w.wq() : w.wqB()).size(0);
        if (qRows != (long) heads * (nopeDim + ropeDim) || w.wkvA().size(0) != latentDim + ropeDim
                || w.wkvB().size(0) != (long) heads * (nopeDim + valueDim)
                || w.wo().size(1) != (long) heads * valueDim) {
            throw new IllegalArgumentException("MLA weights do not fit H " + heads + ", qk_nope_head_dim " + nopeDim
                    + ", qk_rope_head_dim " + ropeDim + ", v_head_dim " + valueDim + ", kv_lora_rank " + latentDim);
        }
        this.qkLayout = new HeadLayout(heads, nopeDim + ropeDim, nopeDim);
        this.vLayout = new HeadLayout(heads, valueDim);
        this.ropeLayout = new HeadLayout(1, ropeDim);
        this.attention = new BlockAttention(scale, null, null, queryBlock, keyBlock);
    }

    @Override
    public INDArray forward(INDArray x, int batch, int seq, RotaryEmbedding rope, LinearInputs inputs) {
        return pass(x, batch, seq, rope, inputs).out();
    }

    /** The forward result and what {@link #backward} needs; immutable once built. */
    public static final class Context implements SelfAttention.Context {
        private final int batch;
        private final int seq;
        private final RotaryEmbedding rope;
        private final RmsNorm.Forward qANormed;   // [T, Q], null without q_lora
        private final RmsNorm.Forward kvANormed;  // [T, C]
        private final INDArray qh;      // [B·H, S, dn+dr] rotated
        private final INDArray kh;      // [B·H, S, dn+dr] rotated
        private final INDArray vh;      // [B·H, S, dv]
        private final BlockAttention.Forward attended;  // context [B·H, S, dv] and lse [B·H·S]
        private final INDArray out;     // [T, D]

        private Context(int batch, int seq, RotaryEmbedding rope, RmsNorm.Forward qANormed, RmsNorm.Forward kvANormed,
                        INDArray qh, INDArray kh, INDArray vh, BlockAttention.Forward attended, INDArray out) {
            this.batch = batch;
            this.seq = seq;
            this.rope = rope;
            this.qANormed = qANormed;
            this.kvANormed = kvANormed;
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
        return pass(x, batch, seq, rope, LinearInputs.NONE);
    }

    /** The forward, showing the projections' inputs to {@code inputs}. */
    private Context pass(INDArray x, int batch, int seq, RotaryEmbedding rope, LinearInputs inputs) {
        inputs.add(LinearInputs.Site.ATTN_IN, x);
        long tokens = (long) batch * seq;
        RmsNorm.Forward qANormed = null;
        INDArray q;                                                                     // [T, H·(dn+dr)]
        if (w.wq() != null) {
            q = Dense.linear(x, w.wq());
        } else {
            qANormed = w.qANorm().forwardTraining(Dense.linear(x, w.wqA(), w.bqA()));    // [T, Q]
            inputs.add(LinearInputs.Site.ATTN_Q_LATENT, qANormed.out());
            q = Dense.linear(qANormed.out(), w.wqB());
        }
        INDArray c = Dense.linear(x, w.wkvA(), w.bkvA());                               // [T, C+dr]
        RmsNorm.Forward kvANormed = w.kvANorm().forwardTraining(
                c.get(NDArrayIndex.all(), NDArrayIndex.interval(0, latentDim)).dup('c'));  // [T, C]
        inputs.add(LinearInputs.Site.ATTN_KV_LATENT, kvANormed.out());
        INDArray kv = Dense.linear(kvANormed.out(), w.wkvB())
                .reshape('c', tokens, heads, nopeDim + valueDim);                      // [T, H, dn+dv]
        if (inputs.wants(LinearInputs.Site.ATTN_Q_NOPE)) {
            inputs.add(LinearInputs.Site.ATTN_Q_NOPE, q.reshape('c', tokens, heads, nopeDim + ropeDim)
                    .get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.interval(0, nopeDim)).dup('c')
                    .reshape('c', tokens, (long) heads * nopeDim).castTo(DataType.FLOAT)); // [T, H·dn]
        }
        // k per head = [k_nope | the one rope key kr]: kr [T, dr] repeated over the heads, rotated with the heads
        INDArray kRope = c.get(NDArrayIndex.all(), NDArrayIndex.interval(latentDim, latentDim + ropeDim))
                .reshape('c', tokens, 1, ropeDim).repeat(1, heads);                    // [T, H, dr]
        INDArray k = Nd4j.concat(2, kv.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.interval(0, nopeDim)),
                kRope).reshape('c', tokens, (long) heads * (nopeDim + ropeDim));      // [T, H·(dn+dr)]
        INDArray v = kv.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.interval(nopeDim,
                nopeDim + valueDim)).dup('c').reshape('c', tokens, (long) heads * valueDim);   // [T, H·dv]
        INDArray qHeads = qkLayout.split(q, batch, seq, rope);                          // [B·H, S, dn+dr] rotated
        INDArray kHeads = qkLayout.split(k, batch, seq, rope);                          // [B·H, S, dn+dr] rotated
        INDArray vHeads = vLayout.split(v, batch, seq, null);                           // [B·H, S, dv]

        BlockAttention.Forward attended = attention.forward(qHeads, kHeads, vHeads, heads, heads); // [B·H, S, dv]
        INDArray merged = vLayout.merge(attended.out(), batch, seq, null);              // [T, H·dv]
        if (inputs.wants(LinearInputs.Site.ATTN_V_LATENT)) {
            inputs.add(LinearInputs.Site.ATTN_V_LATENT, valueLatent(qHeads, kHeads, kvANormed.out(), batch, seq));
        }
        inputs.add(LinearInputs.Site.ATTN_OUT, merged);
        return new Context(batch, seq, rope, qANormed, kvANormed, qHeads, kHeads, vHeads, attended,
                Dense.linear(merged, w.wo(), w.bo()));
    }

    /** The mirror of {@link #forwardTraining}, step by step in reverse. */
    @Override
    public INDArray backward(SelfAttention.Context context, INDArray dOut) {
        Context ctx = (Context) context;
        int batch = ctx.batch;
        int seq = ctx.seq;
        long tokens = (long) batch * seq;
        // out = merged·Woᵀ (+bo)  →  dmerged = dOut·Wo, then [T, H·dv] → [B·H, S, dv]
        INDArray dContext = vLayout.split(Dense.linearBackward(dOut, w.wo()), batch, seq, null);

        // context = softmax(q·kᵀ · scale + mask)·v, block by block  →  dq, dk, dv
        BlockAttention.Gradients g = attention.backward(ctx.qh, ctx.kh, ctx.vh, heads, heads, ctx.attended, dContext);

        // the heads: q's rope part rotated back; k_nope and v back into kv's layout; the shared rope key's gradient
        // summed over the heads, then rotated back
        INDArray dQ = qkLayout.merge(g.dq(), batch, seq, ctx.rope);                     // [T, H·(dn+dr)]
        INDArray dk = qkLayout.merge(g.dk(), batch, seq, null)
                .reshape('c', tokens, heads, nopeDim + ropeDim);                       // [T, H, dn+dr] unrotated
        INDArray dkRope = ropeLayout.merge(dk.get(NDArrayIndex.all(), NDArrayIndex.all(),
                NDArrayIndex.interval(nopeDim, nopeDim + ropeDim)).sum(1).reshape('c', batch, seq, ropeDim),
                batch, seq, ctx.rope);                                                  // [T, dr]
        INDArray dkv = Nd4j.concat(2, dk.get(NDArrayIndex.all(), NDArrayIndex.all(), NDArrayIndex.interval(0, nopeDim)),
                vLayout.merge(g.dv(), batch, seq, null).reshape('c', tokens, heads, valueDim))
                .reshape('c', tokens, (long) heads * (nopeDim + valueDim));            // [T, H·(dn+dv)]

        // kv = kv_a_layernorm(latent)·Wkvbᵀ  →  dlatent; c = x·Wkvaᵀ (+b)  →  dx = [dlatent | dkr]·Wkva
        INDArray dLatent = w.kvANorm().backward(ctx.kvANormed, Dense.linearBackward(dkv, w.wkvB()));   // [T, C]
        INDArray dx = Dense.linearBackward(Nd4j.concat(1, dLatent, dkRope), w.wkvA());  // [T, D]

        // q = x·Wqᵀ  →  dx += dq·Wq; or q = q_a_layernorm(x·Wqaᵀ)·Wqbᵀ  →  dx += q_a_layernorm'(dq·Wqb)·Wqa
        if (w.wq() != null) {
            Dense.linearBackward(dQ, w.wq(), dx, true);
        } else {
            INDArray dqA = w.qANorm().backward(ctx.qANormed, Dense.linearBackward(dQ, w.wqB()));   // [T, Q]
            Dense.linearBackward(dqA, w.wqA(), dx, true);
        }
        return dx;
    }

    /**
     * Each head's attention over the normed kv latents, what llama.cpp's absorbed MLA multiplies by v_b:
     * softmax(q·kᵀ) · latent [B, S, C] per head → [T, H·C], the block attention run again with the latent as every
     * head's values (only when an importance matrix asks for it).
     */
    private INDArray valueLatent(INDArray qHeads, INDArray kHeads, INDArray latent, int batch, int seq) {
        INDArray values = latent.reshape('c', batch, 1, seq, latentDim).repeat(1, heads)
                .reshape('c', (long) batch * heads, seq, latentDim);                   // [B·H, S, C]
        INDArray weighted = attention.forward(qHeads, kHeads, values, heads, heads).out(); // [B·H, S, C]
        return new HeadLayout(heads, latentDim).merge(weighted, batch, seq, null);      // [T, H·C]
    }
}
