package org.sparkmoe.model;

import java.util.EnumMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.SwiGluMlp;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.model.AdapterTerms.Site;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.mumoe.MumoeGradients;
import org.sparkmoe.mumoe.MumoeLayer;
import org.sparkmoe.mumoe.MumoePass;

/**
 * One pre-norm decoder layer: {@code h = x + attn(norm1(x)); out = h + ffn(norm2(h))}, where the FFN is a
 * sparse MoE block or (Qwen2-MoE mlp_only layers, Mistral) a dense SwiGLU MLP. For training, the MoE block is
 * replaced by a trainable one built from it ({@link MoeBlock#with}: LoRA or adapters on its experts, optionally a
 * trainable router); everything else stays frozen and passes gradients through. An adapter's μMoE terms
 * ({@link AdapterTerms}) sit beside the attention's projections and beside the FFN, MoE block or dense MLP:
 * {@code out = h + ffn(n) + μMoE(n)}, n = norm2(h).
 */
public final class DecoderLayer {
    private final RmsNorm inputNorm;
    private final SelfAttention attention;
    private final RmsNorm postAttentionNorm;
    private final MoeBlock moe;   // null for a dense layer
    private final SwiGluMlp mlp;        // null for an MoE layer
    private final MumoeLayer ffnTerm;   // an adapter's term beside the MoE block or dense MLP [D → D], or null

    public DecoderLayer(RmsNorm inputNorm, SelfAttention attention, RmsNorm postAttentionNorm, MoeBlock moe,
                        SwiGluMlp mlp) {
        this(inputNorm, attention, postAttentionNorm, moe, mlp, null);
    }

    private DecoderLayer(RmsNorm inputNorm, SelfAttention attention, RmsNorm postAttentionNorm, MoeBlock moe,
                         SwiGluMlp mlp, MumoeLayer ffnTerm) {
        if ((moe == null) == (mlp == null)) {
            throw new IllegalArgumentException("a decoder layer has exactly one of an MoE block and a dense MLP");
        }
        this.ffnTerm = ffnTerm;
        this.inputNorm = inputNorm;
        this.attention = attention;
        this.postAttentionNorm = postAttentionNorm;
        this.moe = moe;
        this.mlp = mlp;
    }

    public boolean isMoe() {
        return moe != null;
    }

    public MoeBlock moe() {
        return moe;
    }

    /** This MoE layer with another MoE block (sharing the norms and attention). */
    public DecoderLayer withMoe(MoeBlock block) {
        if (moe == null) {
            throw new IllegalArgumentException("a dense layer has no MoE block to replace");
        }
        return new DecoderLayer(inputNorm, attention, postAttentionNorm, block, null, ffnTerm);
    }

    /**
     * This layer (weights shared) with an adapter's terms instead of its own: {@code attentionTerms} beside the
     * attention's projections, {@code ffnTerm} (or null) beside the MoE block or the dense MLP.
     */
    public DecoderLayer withTerms(Map<Site, MumoeLayer> attentionTerms, MumoeLayer ffnTerm) {
        return new DecoderLayer(inputNorm, attention.withTerms(attentionTerms), postAttentionNorm, moe, mlp, ffnTerm);
    }

    /** The site of the term beside this layer's FFN: moe or mlp. */
    private Site ffnSite() {
        return moe == null ? Site.MLP : Site.MOE;
    }

    /** h += the FFN term's output on {@code normed} (inference), showing its gates to {@code inputs}. */
    private INDArray plusFfnTerm(INDArray h, INDArray normed, LinearInputs inputs) {
        if (ffnTerm == null) {
            return h;
        }
        MumoePass term = ffnTerm.forward(normed);
        inputs.termGates(ffnSite(), term.gates());
        return h.addi(term.y());
    }

    /**
     * Output of a layer: hidden [B·S, D] and, for an MoE layer, router logits [B·S, E], the MoE block's input
     * [B·S, D] (the post-attention norm's output, which the router and the experts read) and its routed rows (full
     * experts); null otherwise.
     */
    public record Output(INDArray hidden, INDArray routerLogits, INDArray moeInput, FullExperts.RoutedRows routed) {
    }

    public Output forward(INDArray x, int batch, int seq, RotaryEmbedding rope, int topK) {
        return forward(x, batch, seq, rope, topK, LinearInputs.NONE);
    }

    /**
     * {@link #forward(INDArray, int, int, RotaryEmbedding, int)}, showing the attention's and a dense MLP's
     * projections their inputs to {@code inputs} (an MoE layer's are its {@link Output#moeInput}).
     */
    public Output forward(INDArray x, int batch, int seq, RotaryEmbedding rope, int topK, LinearInputs inputs) {
        INDArray h = attend(x, batch, seq, rope, inputs);                                        // [B·S, D]
        INDArray normed = postNorm(h);
        if (moe == null) {
            inputs.add(LinearInputs.Site.FFN_IN, normed);
            if (!inputs.wants(LinearInputs.Site.FFN_INTER)) {
                return new Output(plusFfnTerm(h.addi(mlp.forward(normed)), normed, inputs), null, null, null);
            }
            SwiGluMlp.Context dense = mlp.forwardTraining(normed);   // in FLOAT bit-identical to forward
            inputs.add(LinearInputs.Site.FFN_INTER, Activations.swiGlu(dense.g(), dense.u()));    // [B·S, I]
            return new Output(plusFfnTerm(h.addi(dense.out()), normed, inputs), null, null, null);
        }
        MoeBlock.Output block = moe.forward(normed, topK);
        return new Output(finish(h, normed, block.hidden(), inputs), block.routerLogits(), normed, block.routed());
    }

    /*
     * An MoE layer's inference forward in steps, for a pass that runs the MoE block's experts in groups as separate
     * tasks (MoeBlock#route, #expertOutputs, #combine): h = attend(x); normed = postNorm(h); the block's output from
     * normed; finish(h, normed, block output). The same operations as forward, so the same bits.
     */

    /** The attention half: {@code h = x + attn(norm1(x))} [B·S, D]. */
    public INDArray attend(INDArray x, int batch, int seq, RotaryEmbedding rope) {
        return attend(x, batch, seq, rope, LinearInputs.NONE);
    }

    /**
     * {@link #attend(INDArray, int, int, RotaryEmbedding)}, showing the attention's projections their inputs to
     * {@code inputs} (as {@link #forward(INDArray, int, int, RotaryEmbedding, int, LinearInputs)} shows them).
     */
    public INDArray attend(INDArray x, int batch, int seq, RotaryEmbedding rope, LinearInputs inputs) {
        return x.add(attention.forward(inputNorm.forward(x), batch, seq, rope, inputs));
    }

    /** What the FFN reads: {@code norm2(h)} [B·S, D]. */
    public INDArray postNorm(INDArray h) {
        return postAttentionNorm.forward(h);
    }

    /** An MoE layer's output: {@code h + moe(n) (+ μMoE(n))}, adding into {@code h} [B·S, D]; n = norm2(h). */
    public INDArray finish(INDArray h, INDArray normed, INDArray moeOut) {
        return finish(h, normed, moeOut, LinearInputs.NONE);
    }

    private INDArray finish(INDArray h, INDArray normed, INDArray moeOut, LinearInputs inputs) {
        if (moe == null) {
            throw new IllegalArgumentException("a dense layer has no MoE block output to add");
        }
        return plusFfnTerm(h.addi(moeOut), normed, inputs);
    }

    /** The training forward result and what {@link #backward} needs; immutable once built. */
    public static final class Context {
        private final RmsNorm.Forward inputNormed;       // [B·S, D]
        private final SelfAttention.Context attention;
        private final RmsNorm.Forward postNormed;        // [B·S, D]
        private final MoeBlock block;                // null for a dense layer
        private final MoeBlock.Context moe;          // null for a dense layer
        private final SwiGluMlp.Context mlp;             // null for an MoE layer
        private final MumoePass ffnTerm;                 // the term beside the MoE block or dense MLP, or null
        private final INDArray out;                      // [B·S, D]

        private Context(RmsNorm.Forward inputNormed, SelfAttention.Context attention, RmsNorm.Forward postNormed,
                        MoeBlock block, MoeBlock.Context moe, SwiGluMlp.Context mlp, MumoePass ffnTerm,
                        INDArray out) {
            this.ffnTerm = ffnTerm;
            this.inputNormed = inputNormed;
            this.attention = attention;
            this.postNormed = postNormed;
            this.block = block;
            this.moe = moe;
            this.mlp = mlp;
            this.out = out;
        }

        /** @return [B·S, D] */
        public INDArray out() {
            return out;
        }

        /** @return [B·S, E] the router logits, or null for a dense layer */
        public INDArray routerLogits() {
            return moe == null ? null : moe.routerLogits();
        }
    }

    /**
     * @param dx    [B·S, D]
     * @param moe   the trainable block's gradients, null for a dense layer
     * @param terms the adapter terms' gradients by site (empty without terms)
     */
    public record Gradients(INDArray dx, MoeBlock.Gradients moe, Map<Site, MumoeGradients> terms) {
    }

    /**
     * Training forward, FLOAT or DOUBLE (the model's type).
     *
     * @param x          [B·S, D]
     * @param block      the trainable MoE block replacing {@link #moe()}; null exactly when the layer is dense
     * @param jitterSeed seeds the router jitter noise (used only when the block's jitter is > 0)
     */
    public Context forwardTraining(INDArray x, int batch, int seq, RotaryEmbedding rope, MoeBlock block,
                                   long jitterSeed) {
        if ((block == null) != (moe == null)) {
            throw new IllegalArgumentException(moe == null ? "a dense layer takes no trainable MoE block"
                    : "an MoE layer needs its trainable MoE block");
        }
        RmsNorm.Forward inputNormed = inputNorm.forwardTraining(x);                            // [B·S, D]
        SelfAttention.Context attn = attention.forwardTraining(inputNormed.out(), batch, seq, rope);
        INDArray h = x.add(attn.out());                                                          // [B·S, D]
        RmsNorm.Forward postNormed = postAttentionNorm.forwardTraining(h);                      // [B·S, D]
        MumoePass term = ffnTerm == null ? null : ffnTerm.forward(postNormed.out());
        if (block == null) {
            SwiGluMlp.Context dense = mlp.forwardTraining(postNormed.out());
            INDArray out = h.add(dense.out());                                                   // [B·S, D]
            if (term != null) {
                out.addi(term.y());
            }
            return new Context(inputNormed, attn, postNormed, null, null, dense, term, out);
        }
        MoeBlock.Context moeCtx = block.forwardTraining(postNormed.out(), jitterSeed);
        INDArray out = h.add(moeCtx.out());                                                      // [B·S, D]
        if (term != null) {
            out.addi(term.y());
        }
        return new Context(inputNormed, attn, postNormed, block, moeCtx, null, term, out);
    }

    /**
     * The mirror of {@link #forwardTraining}.
     *
     * @param dOut          [B·S, D]
     * @param dRouterLogits [B·S, E] gradient of a loss on the router logits, or null
     */
    public Gradients backward(Context ctx, INDArray dOut, INDArray dRouterLogits) {
        // out = h + ffn(postNorm(h)) (+ μMoE(postNorm(h)))
        Map<Site, MumoeGradients> terms = new EnumMap<>(Site.class);
        MoeBlock.Gradients moeGrads = null;
        INDArray dNormed;                                                                        // [B·S, D]
        if (ctx.block == null) {
            dNormed = mlp.backward(ctx.mlp, dOut);
        } else {
            moeGrads = ctx.block.backward(ctx.moe, dOut, dRouterLogits);
            dNormed = moeGrads.dx();
        }
        if (ctx.ffnTerm != null) {
            MumoeGradients term = ffnTerm.backward(ctx.ffnTerm, dOut);
            terms.put(ffnSite(), term);
            dNormed = dNormed.add(term.dx());
        }
        INDArray dh = dOut.add(postAttentionNorm.backward(ctx.postNormed, dNormed));             // [B·S, D]
        // h = x + attn(inputNorm(x))
        INDArray dAttnIn = attention.backward(ctx.attention, dh, terms);                         // [B·S, D]
        return new Gradients(dh.addi(inputNorm.backward(ctx.inputNormed, dAttnIn)), moeGrads, terms);
    }
}
