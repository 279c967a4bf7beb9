package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.NativeBuffers;
import org.sparkmoe.kernels.StepWorkspace;
import org.sparkmoe.moe.MoeBlock;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.function.IntFunction;
import java.util.Map;
import org.sparkmoe.mumoe.MumoeGradients;

/**
 * A decoder-only MoE language model (Mixtral, Qwen2-MoE, or dense Mistral): embedding, decoder layers,
 * final RMSNorm, LM head. Immutable after loading; one instance serves every task of an executor JVM until a model
 * cache {@linkplain #release() releases} the arrays it owns.
 */
public final class MoeTransformer {
    private final ModelConfig config;
    private final ModelEnds ends;       // embedding, final norm, LM head, RoPE tables
    private final List<DecoderLayer> layers;
    private final OwnedArrays owned;    // what this instance allocated beyond what it shares

    /** @param owned the arrays allocated for this model alone (see {@link OwnedArrays}) */
    public MoeTransformer(ModelEnds ends, List<DecoderLayer> layers, OwnedArrays owned) {
        this.config = ends.config();
        this.ends = ends;
        this.owned = owned;
        this.layers = List.copyOf(layers);
    }

    public ModelConfig config() {
        return config;
    }

    public List<DecoderLayer> layers() {
        return layers;
    }

    /** Off-heap bytes of the arrays this instance owns (not those it shares with the model it was made from). */
    public long ownedBytes() {
        return owned.bytes();
    }

    /**
     * Frees the arrays this instance owns now; the model must not be used afterwards, nor any model made from it by
     * {@link #withMoeBlocks} (which shares them). For a model cache evicting it.
     */
    public void release() {
        owned.release();
    }

    /**
     * This model with other MoE blocks (one per MoE layer, in layer order), sharing every other weight: an adapter
     * applied without another copy of the model.
     *
     * @param owned the arrays allocated for the new blocks alone (an adapter's factors)
     */
    public MoeTransformer withMoeBlocks(List<MoeBlock> blocks, OwnedArrays owned) {
        List<DecoderLayer> replaced = new ArrayList<>(layers.size());
        int next = 0;
        for (DecoderLayer layer : layers) {
            if (!layer.isMoe()) {
                replaced.add(layer);
            } else if (next < blocks.size()) {
                replaced.add(layer.withMoe(blocks.get(next++)));
            } else {
                break;
            }
        }
        if (next != blocks.size() || replaced.size() != layers.size()) {
            throw new IllegalArgumentException("need one MoE block per MoE layer (" + layers.stream()
                    .filter(DecoderLayer::isMoe).count() + "), got " + blocks.size());
        }
        return new MoeTransformer(ends, replaced, owned);
    }

    /**
     * This model with an adapter's terms ({@link AdapterTerms}) beside its projections and MoE blocks, sharing every
     * weight; forward, training forward and backward all compute them. A term beside an MoE block needs an MoE
     * layer, one beside a dense MLP a dense layer; one beside an attention projection needs grouped-query attention.
     *
     * @param owned the arrays allocated for the terms alone (an adapter's factors), or an empty set when the caller
     *              owns them (a training state)
     */
    public MoeTransformer withTerms(AdapterTerms terms, OwnedArrays owned) {
        for (AdapterTerms.Key key : terms.all().keySet()) {
            if (key.layer() < 0 || key.layer() >= layers.size()) {
                throw new IllegalArgumentException("a μMoE term at layer " + key.layer() + ": the model has "
                        + layers.size() + " layers");
            }
            AdapterTerms.Site ffn = layers.get(key.layer()).isMoe() ? AdapterTerms.Site.MOE : AdapterTerms.Site.MLP;
            if (!key.site().isAttention() && key.site() != ffn) {
                throw new IllegalArgumentException("a μMoE term beside " + key.site().id() + " at layer " + key.layer()
                        + ", whose feed-forward is " + (ffn == AdapterTerms.Site.MOE ? "an MoE block" : "a dense MLP"));
            }
        }
        List<DecoderLayer> replaced = new ArrayList<>(layers.size());
        for (int l = 0; l < layers.size(); l++) {
            AdapterTerms.Site ffn = layers.get(l).isMoe() ? AdapterTerms.Site.MOE : AdapterTerms.Site.MLP;
            replaced.add(layers.get(l).withTerms(terms.attention(l), terms.at(l, ffn)));
        }
        return new MoeTransformer(ends, replaced, owned);
    }

    /** Logits only, with the config's experts per token. */
    public INDArray logits(int[][] tokens) {
        return forward(tokens, config.num_experts_per_tok, false).logits();
    }

    /**
     * @param tokens  B sequences of S token ids each
     * @param topK    experts per token (the config's value, or an override)
     * @param capture whether to keep hidden states, router logits and router inputs
     */
    public ForwardOutput forward(int[][] tokens, int topK, boolean capture) {
        return forward(tokens, topK, capture, layer -> LinearInputs.NONE);
    }

    /**
     * {@link #forward(int[][], int, boolean)}, showing decoder layer i's attention and dense-MLP projections their
     * inputs to {@code inputs.apply(i)}.
     */
    public ForwardOutput forward(int[][] tokens, int topK, boolean capture, IntFunction<LinearInputs> inputs) {
        List<INDArray> hiddenStates = new ArrayList<>();
        List<INDArray> routerLogits = new ArrayList<>();
        List<INDArray> routerInputs = new ArrayList<>();
        INDArray hidden = decode(tokens, topK, capture, hiddenStates, routerLogits, routerInputs, inputs);
        return new ForwardOutput(lmHead(hidden), hiddenStates, routerLogits, routerInputs);
    }

    /**
     * The final norm's output [B·S, D], which the LM head reads: {@link #forward} without the logits, so that a
     * caller can take the [B·S, V] logits in row blocks ({@link #lmHead}) instead of all at once. Each decoder layer
     * runs in the thread's {@link StepWorkspace} ({@link #stepLayers}).
     */
    public INDArray finalHidden(int[][] tokens, int topK) {
        INDArray hidden = stepLayers(tokens, topK, layer -> LinearInputs.NONE, null);
        INDArray normed = ends.finalNorm(hidden);
        NativeBuffers.free(hidden);                                    // the norm's output is a new array
        return normed;
    }

    /** What a statistics pass ({@link #moeLayerPass}) sees of each MoE layer while the layer's step lasts. */
    @FunctionalInterface
    public interface MoeLayerSink {
        /**
         * @param moeLayer 0-based among the MoE layers
         * @param layer    its decoder layer
         * @param block    its MoE block
         * @param input    the block's input, norm2(h) [B·S, D]
         * @param logits   its router's logits [B·S, E]
         * @param routed   its routed rows as the block computed them (null for low-rank experts)
         * @param output   the decoder layer's output [B·S, D]
         */
        void accept(int moeLayer, int layer, MoeBlock block, INDArray input, INDArray logits,
                    FullExperts.RoutedRows routed, INDArray output);
    }

    /**
     * The decoder layers over {@code tokens} for statistics (calibration), as {@link #stepLayers} runs them: an MoE
     * layer shows its block's input, its router logits, its routed rows and its output to {@code sink} before its step
     * ends. They, and every array the sink makes, are invalid once the sink returns. The final norm and the LM head
     * are not run.
     *
     * @param inputs what decoder layer i's attention and dense-MLP projections show their inputs to
     */
    public void moeLayerPass(int[][] tokens, int topK, IntFunction<LinearInputs> inputs, MoeLayerSink sink) {
        NativeBuffers.free(stepLayers(tokens, topK, inputs, sink));
    }

    /**
     * The embedding and the decoder layers, each layer in the thread's {@link StepWorkspace}: only its output outlives
     * its step, and the layer before's is freed. An MoE layer is shown to {@code sink} (null: none) before its step
     * ends.
     *
     * @return the last layer's output [B·S, D]
     */
    private INDArray stepLayers(int[][] tokens, int topK, IntFunction<LinearInputs> inputs, MoeLayerSink sink) {
        int batch = tokens.length;
        int seq = tokens[0].length;
        INDArray hidden = ends.embed(tokens);                                         // [B·S, D]
        int moeLayer = 0;
        for (int i = 0; i < layers.size(); i++) {
            DecoderLayer layer = layers.get(i);
            INDArray input = hidden;
            try (MemoryWorkspace step = StepWorkspace.step()) {    // only the layer's output outlives it
                DecoderLayer.Output out = layer.forward(input, batch, seq, ends.rope(), topK, inputs.apply(i));
                if (sink != null && out.routerLogits() != null) {
                    sink.accept(moeLayer++, i, layer.moe(), out.moeInput(), out.routerLogits(), out.routed(),
                            out.hidden());
                }
                hidden = StepWorkspace.keep(out.hidden());
            }
            if (hidden != input) {
                NativeBuffers.free(input);
            }
        }
        return hidden;
    }

    /** Logits [N, V] of final hidden rows [N, D]. */
    public INDArray lmHead(INDArray finalHidden) {
        return ends.lmHead(finalHidden);
    }

    /** The embedding, final norm, LM head and RoPE tables around the layers. */
    public ModelEnds ends() {
        return ends;
    }

    /** Embedding, decoder layers and final norm; with {@code capture}, fills the three lists. */
    private INDArray decode(int[][] tokens, int topK, boolean capture, List<INDArray> hiddenStates,
                            List<INDArray> routerLogits, List<INDArray> routerInputs,
                            IntFunction<LinearInputs> inputs) {
        int batch = tokens.length;
        INDArray hidden = ends.embed(tokens);                                         // [B·S, D]
        int seq = tokens[0].length;
        for (int i = 0; i < layers.size(); i++) {
            if (capture) {
                hiddenStates.add(hidden);
            }
            DecoderLayer.Output out = layers.get(i).forward(hidden, batch, seq, ends.rope(), topK, inputs.apply(i));
            hidden = out.hidden();
            if (capture && out.routerLogits() != null) {
                routerLogits.add(out.routerLogits());
                routerInputs.add(out.moeInput());
            }
        }
        hidden = ends.finalNorm(hidden);
        if (capture) {
            hiddenStates.add(hidden);
        }
        return hidden;
    }

    /** What the model computes in: FLOAT, or DOUBLE for a model loaded for gradient checks. */
    public DataType dataType() {
        return ends.dataType();
    }

    /**
     * The training forward result and what {@link #backward} needs; immutable once built. Either every layer's full
     * context, or (checkpointed) only every layer's input [B·S, D], from which {@link #backward} recomputes one
     * layer's context at a time.
     */
    public static final class TrainingContext {
        private final List<DecoderLayer.Context> layers; // one per layer, or null when checkpointed
        private final List<INDArray> inputs;             // [B·S, D] per layer when checkpointed, else null
        private final List<MoeBlock> blocks;             // the trainable blocks, one per MoE layer
        private final int batch;
        private final int seq;
        private final long jitterSeed;
        private final RmsNorm.Forward normed;   // [B·S, D] after the final norm
        private final List<INDArray> routerLogits;

        private TrainingContext(List<DecoderLayer.Context> layers, List<INDArray> inputs, List<MoeBlock> blocks,
                                int batch, int seq, long jitterSeed, RmsNorm.Forward normed,
                                List<INDArray> routerLogits) {
            this.layers = layers;
            this.inputs = inputs;
            this.blocks = blocks;
            this.batch = batch;
            this.seq = seq;
            this.jitterSeed = jitterSeed;
            this.normed = normed;
            this.routerLogits = routerLogits;
        }

        /** @return [B·S, D] the final norm's output, which the LM head reads (logits = finalHidden·Wᵀ) */
        public INDArray finalHidden() {
            return normed.out();
        }

        /** @return one [B·S, E] per MoE layer, in layer order */
        public List<INDArray> routerLogits() {
            return routerLogits;
        }
    }

    /** {@link #forwardTraining(int[][], List, long, boolean)} keeping every layer's full context. */
    public TrainingContext forwardTraining(int[][] tokens, List<MoeBlock> blocks, long jitterSeed) {
        return forwardTraining(tokens, blocks, jitterSeed, false);
    }

    /**
     * Training forward with LoRA MoE blocks, in the model's data type (FLOAT, or DOUBLE for gradient checks), up to
     * the final norm: the loss takes the LM head a block of rows at a time (train.CausalLmLoss.throughHead). With
     * every LoRA B zero and the frozen router, the FLOAT final hidden states are bit-identical to
     * {@link #finalHidden(int[][], int)}'s.
     *
     * @param tokens      B sequences of S token ids each
     * @param blocks      one trainable block per MoE layer, in layer order (see {@link MoeBlock#with})
     * @param jitterSeed  seeds the router jitter of every layer (a different stream per layer)
     * @param checkpoint  keep only each layer's input (and the router logits) instead of its whole context;
     *                    {@link #backward} then recomputes each layer's forward, bit for bit the same
     */
    public TrainingContext forwardTraining(int[][] tokens, List<MoeBlock> blocks, long jitterSeed,
                                           boolean checkpoint) {
        int batch = tokens.length;
        long moeLayers = layers.stream().filter(DecoderLayer::isMoe).count();
        if (blocks.size() != moeLayers) {
            throw new IllegalArgumentException("need one LoRA MoE block per MoE layer (" + moeLayers + "), got "
                    + blocks.size());
        }
        List<DecoderLayer.Context> contexts = checkpoint ? null : new ArrayList<>(layers.size());
        List<INDArray> inputs = checkpoint ? new ArrayList<>(layers.size()) : null;
        List<INDArray> routerLogits = new ArrayList<>(blocks.size());
        INDArray hidden = ends.embed(tokens);                                                  // [B·S, D]
        int seq = tokens[0].length;
        for (int l = 0; l < layers.size(); l++) {
            DecoderLayer.Context ctx = layerForward(l, hidden, batch, seq, blocks, jitterSeed);
            if (checkpoint) {
                inputs.add(hidden);
            } else {
                contexts.add(ctx);
            }
            if (ctx.routerLogits() != null) {
                routerLogits.add(ctx.routerLogits());
            }
            hidden = ctx.out();
        }
        RmsNorm.Forward normed = ends.finalNorm().forwardTraining(hidden);                      // [B·S, D]
        return new TrainingContext(checkpoint ? null : List.copyOf(contexts), checkpoint ? List.copyOf(inputs) : null,
                List.copyOf(blocks), batch, seq, jitterSeed, normed, List.copyOf(routerLogits));
    }

    /**
     * Layer l's training forward on its input x [B·S, D], with its trainable block (if MoE) and its own jitter stream:
     * the same call in the forward and in a checkpointed backward's recomputation.
     */
    private DecoderLayer.Context layerForward(int l, INDArray x, int batch, int seq, List<MoeBlock> blocks,
                                              long jitterSeed) {
        DecoderLayer layer = layers.get(l);
        MoeBlock block = null;
        if (layer.isMoe()) {
            int moeIndex = 0;
            for (int i = 0; i < l; i++) {
                moeIndex += layers.get(i).isMoe() ? 1 : 0;
            }
            block = blocks.get(moeIndex);
        }
        return layer.forwardTraining(x, batch, seq, ends.rope(), block, jitterSeed + 0x9E3779B97F4A7C15L * (l + 1));
    }

    /**
     * What {@link #backward} returns.
     *
     * @param moe   the LoRA (and router) gradients of each MoE layer's trainable block, in layer order
     * @param terms the gradients of the adapter terms ({@link #withTerms}), by layer and site, in layer order
     */
    public record Gradients(List<MoeBlock.Gradients> moe, Map<AdapterTerms.Key, MumoeGradients> terms) {
    }

    /**
     * The mirror of {@link #forwardTraining}, down to the output of the embedding (which is frozen and gets no
     * gradient). A checkpointed context recomputes each layer's forward from its kept input just before that layer's
     * backward (same operations, same jitter seed: the same bits), so one layer's context is alive at a time.
     *
     * @param dFinalHidden  [B·S, D] the loss's gradient at the final norm's output (through the LM head)
     * @param dRouterLogits one [B·S, E] per MoE layer (a loss on the router logits), or null
     * @return the gradients of the trainable blocks and of the adapter terms
     */
    public Gradients backward(TrainingContext ctx, INDArray dFinalHidden, List<INDArray> dRouterLogits) {
        if (dRouterLogits != null && dRouterLogits.size() != ctx.routerLogits.size()) {
            throw new IllegalArgumentException("need one router-logit gradient per MoE layer ("
                    + ctx.routerLogits.size() + "), got " + dRouterLogits.size());
        }
        INDArray dHidden = ends.finalNorm().backward(ctx.normed, dFinalHidden);                  // [B·S, D]
        MoeBlock.Gradients[] grads = new MoeBlock.Gradients[ctx.routerLogits.size()];
        List<Map<AdapterTerms.Key, MumoeGradients>> termsByLayer = new ArrayList<>();
        int moeIndex = grads.length;
        for (int l = layers.size() - 1; l >= 0; l--) {
            DecoderLayer layer = layers.get(l);
            INDArray dRouter = null;
            if (layer.isMoe()) {
                moeIndex--;
                dRouter = dRouterLogits == null ? null : dRouterLogits.get(moeIndex);
            }
            DecoderLayer.Context layerCtx = ctx.layers != null ? ctx.layers.get(l)
                    : layerForward(l, ctx.inputs.get(l), ctx.batch, ctx.seq, ctx.blocks, ctx.jitterSeed);
            DecoderLayer.Gradients g = layer.backward(layerCtx, dHidden, dRouter);
            if (layer.isMoe()) {
                grads[moeIndex] = g.moe();
            }
            Map<AdapterTerms.Key, MumoeGradients> layerTerms = new LinkedHashMap<>();
            int at = l;
            g.terms().forEach((site, tg) -> layerTerms.put(new AdapterTerms.Key(at, site), tg));
            termsByLayer.add(0, layerTerms);
            dHidden = g.dx();
        }
        Map<AdapterTerms.Key, MumoeGradients> terms = new LinkedHashMap<>();
        termsByLayer.forEach(terms::putAll);
        return new Gradients(List.of(grads), terms);
    }
}
