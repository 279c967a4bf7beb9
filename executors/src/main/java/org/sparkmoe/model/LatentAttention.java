package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.BlockAttention;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;

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
 * bit-identical by construction; the weights are frozen, only the input gets a gradient.
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
        DataType dt = x.dataType();
        boolean single = dt == DataType.FLOAT;
        int tokens = batch * seq;
        int qk = nopeDim + ropeDim;
        int kvWidth = nopeDim + valueDim;
        RmsNorm.Forward qANormed = null;
        INDArray q;                                                                     // [T, H·(dn+dr)]
        if (w.wq() != null) {
            q = Dense.linear(x, w.wq());
        } else {
            qANormed = w.qANorm().forwardTraining(Dense.linear(x, w.wqA(), w.bqA()));    // [T, Q]
            inputs.add(LinearInputs.Site.ATTN_Q_LATENT, qANormed.out());
            q = Dense.linear(qANormed.out(), w.wqB());
        }
        double[] c = Flat.values(Dense.linear(x, w.wkvA(), w.bkvA()));                   // [T, C+dr]
        double[] latent = new double[tokens * latentDim];                               // [T, C]
        double[] kRope = new double[tokens * ropeDim];                                  // [T, dr] rotated
        for (int t = 0; t < tokens; t++) {
            System.arraycopy(c, t * (latentDim + ropeDim), latent, t * latentDim, latentDim);
            rope.rotate(c, t * (latentDim + ropeDim) + latentDim, kRope, t * ropeDim, t % seq, single);
        }
        RmsNorm.Forward kvANormed = w.kvANorm().forwardTraining(Flat.array(latent, new long[] {tokens, latentDim},
                dt));
        inputs.add(LinearInputs.Site.ATTN_KV_LATENT, kvANormed.out());
        double[] kv = Flat.values(Dense.linear(kvANormed.out(), w.wkvB()));             // [T, H·(dn+dv)]
        double[] qv = Flat.values(q);
        if (inputs.wants(LinearInputs.Site.ATTN_Q_NOPE)) {
            inputs.add(LinearInputs.Site.ATTN_Q_NOPE, qNope(qv, tokens));
        }

        double[] qh = new double[tokens * heads * qk];                                  // [B, H, S, dn+dr]
        double[] kh = new double[tokens * heads * qk];                                  // [B, H, S, dn+dr]
        double[] vh = new double[tokens * heads * valueDim];                            // [B, H, S, dv]
        for (int t = 0; t < tokens; t++) {
            int b = t / seq;
            int s = t % seq;
            for (int h = 0; h < heads; h++) {
                int row = (b * heads + h) * seq + s;
                int qAt = (t * heads + h) * qk;
                int kvAt = (t * heads + h) * kvWidth;
                System.arraycopy(qv, qAt, qh, row * qk, nopeDim);
                rope.rotate(qv, qAt + nopeDim, qh, row * qk + nopeDim, s, single);
                System.arraycopy(kv, kvAt, kh, row * qk, nopeDim);
                System.arraycopy(kRope, t * ropeDim, kh, row * qk + nopeDim, ropeDim);
                System.arraycopy(kv, kvAt + nopeDim, vh, row * valueDim, valueDim);
            }
        }
        long[] qkShape = {(long) batch * heads, seq, qk};
        long[] vShape = {(long) batch * heads, seq, valueDim};
        INDArray qHeads = Flat.array(qh, qkShape, dt);
        INDArray kHeads = Flat.array(kh, qkShape, dt);
        INDArray vHeads = Flat.array(vh, vShape, dt);

        BlockAttention.Forward attended = attention.forward(qHeads, kHeads, vHeads, heads, heads); // [B·H, S, dv]
        INDArray merged = Flat.array(mergeHeads(Flat.values(attended.out()), batch, seq, valueDim),
                new long[] {tokens, (long) heads * valueDim}, dt);                      // [T, H·dv]
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
        DataType dt = dOut.dataType();
        int batch = ctx.batch;
        int seq = ctx.seq;
        int tokens = batch * seq;
        int qk = nopeDim + ropeDim;
        int kvWidth = nopeDim + valueDim;
        // out = merged·Woᵀ (+bo)  →  dmerged = dOut·Wo, then [T, H·dv] → [B·H, S, dv]
        INDArray dContext = Flat.array(splitHeads(Flat.values(Dense.linearBackward(dOut, w.wo())), batch, seq,
                valueDim), ctx.vh.shape(), dt);                                         // [B·H, S, dv]

        // context = softmax(q·kᵀ · scale + mask)·v, block by block  →  dq, dk, dv
        BlockAttention.Gradients g = attention.backward(ctx.qh, ctx.kh, ctx.vh, heads, heads, ctx.attended, dContext);

        // the heads: q's rope part rotated back; k_nope and v back into kv's layout; the shared rope key's gradient
        // summed over the heads, then rotated back
        double[] dqh = Flat.values(g.dq());
        double[] dkh = Flat.values(g.dk());
        double[] dvh = Flat.values(g.dv());
        double[] dqFlat = new double[tokens * heads * qk];                              // [T, H·(dn+dr)]
        double[] dkv = new double[tokens * heads * kvWidth];                            // [T, H·(dn+dv)]
        double[] dkRope = new double[ropeDim];                                          // [dr] one token's sum
        double[] dc = new double[tokens * (latentDim + ropeDim)];                       // [T, C+dr]
        for (int t = 0; t < tokens; t++) {
            int b = t / seq;
            int s = t % seq;
            java.util.Arrays.fill(dkRope, 0.0);
            for (int h = 0; h < heads; h++) {
                int row = (b * heads + h) * seq + s;
                int qAt = (t * heads + h) * qk;
                int kvAt = (t * heads + h) * kvWidth;
                System.arraycopy(dqh, row * qk, dqFlat, qAt, nopeDim);
                ctx.rope.rotateBack(dqh, row * qk + nopeDim, dqFlat, qAt + nopeDim, s);
                System.arraycopy(dkh, row * qk, dkv, kvAt, nopeDim);
                for (int i = 0; i < ropeDim; i++) {
                    dkRope[i] += dkh[row * qk + nopeDim + i];
                }
                System.arraycopy(dvh, row * valueDim, dkv, kvAt + nopeDim, valueDim);
            }
            ctx.rope.rotateBack(dkRope, 0, dc, t * (latentDim + ropeDim) + latentDim, s);
        }

        // kv = kv_a_layernorm(latent)·Wkvbᵀ  →  dlatent; c = x·Wkvaᵀ (+b)  →  dx = [dlatent | dkr]·Wkva
        INDArray dNormed = Dense.linearBackward(Flat.array(dkv, new long[] {tokens, (long) heads * kvWidth}, dt),
                w.wkvB());                                                              // [T, C]
        double[] dLatent = Flat.values(w.kvANorm().backward(ctx.kvANormed, dNormed));
        for (int t = 0; t < tokens; t++) {
            System.arraycopy(dLatent, t * latentDim, dc, t * (latentDim + ropeDim), latentDim);
        }
        INDArray dx = Dense.linearBackward(Flat.array(dc, new long[] {tokens, latentDim + ropeDim}, dt),
                w.wkvA());                                                              // [T, D]

        // q = x·Wqᵀ  →  dx += dq·Wq; or q = q_a_layernorm(x·Wqaᵀ)·Wqbᵀ  →  dx += q_a_layernorm'(dq·Wqb)·Wqa
        INDArray dQ = Flat.array(dqFlat, new long[] {tokens, (long) heads * qk}, dt);  // [T, H·(dn+dr)]
        if (w.wq() != null) {
            Dense.linearBackward(dQ, w.wq(), dx, true);
        } else {
            INDArray dqA = w.qANorm().backward(ctx.qANormed, Dense.linearBackward(dQ, w.wqB()));   // [T, Q]
            Dense.linearBackward(dqA, w.wqA(), dx, true);
        }
        return dx;
    }

    /** Each head's q_nope: q [T, H·(dn+dr)] → [T, H·dn]. */
    private INDArray qNope(double[] q, int tokens) {
        int qk = nopeDim + ropeDim;
        float[] out = new float[tokens * heads * nopeDim];
        for (int th = 0; th < tokens * heads; th++) {
            for (int i = 0; i < nopeDim; i++) {
                out[th * nopeDim + i] = (float) q[th * qk + i];
            }
        }
        return Flat.array(out, new long[] {tokens, (long) heads * nopeDim});
    }

    /**
     * Each head's attention over the normed kv latents, what llama.cpp's absorbed MLA multiplies by v_b:
     * softmax(q·kᵀ) · latent [B, S, C] per head → [T, H·C], the block attention run again with the latent as every
     * head's values (only when an importance matrix asks for it).
     */
    private INDArray valueLatent(INDArray qHeads, INDArray kHeads, INDArray latent, int batch, int seq) {
        double[] c = Flat.values(latent);                                               // [T, C]
        double[] values = new double[batch * heads * seq * latentDim];                  // [B·H, S, C]
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                System.arraycopy(c, b * seq * latentDim, values, (b * heads + h) * seq * latentDim, seq * latentDim);
            }
        }
        INDArray weighted = attention.forward(qHeads, kHeads, Flat.array(values,
                new long[] {(long) batch * heads, seq, latentDim}, latent.dataType()), heads, heads).out(); // [B·H, S, C]
        return Flat.array(mergeHeads(Flat.values(weighted), batch, seq, latentDim),
                new long[] {(long) batch * seq, (long) heads * latentDim}, latent.dataType());
    }

    /** [T, H·n] → [B, H, S, n]. */
    private double[] splitHeads(double[] src, int batch, int seq, int n) {
        double[] dst = new double[src.length];
        for (int b = 0; b < batch; b++) {
            for (int s = 0; s < seq; s++) {
                for (int h = 0; h < heads; h++) {
                    System.arraycopy(src, ((b * seq + s) * heads + h) * n, dst, ((b * heads + h) * seq + s) * n, n);
                }
            }
        }
        return dst;
    }

    /** [B, H, S, n] → [T, H·n]. */
    private double[] mergeHeads(double[] src, int batch, int seq, int n) {
        double[] dst = new double[src.length];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                for (int s = 0; s < seq; s++) {
                    System.arraycopy(src, ((b * heads + h) * seq + s) * n, dst, ((b * seq + s) * heads + h) * n, n);
                }
            }
        }
        return dst;
    }
}
