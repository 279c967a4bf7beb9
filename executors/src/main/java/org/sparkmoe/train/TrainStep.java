package org.sparkmoe.train;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.experts.CpExperts;
import org.sparkmoe.experts.ExpertFfn;
import org.sparkmoe.experts.ExpertGradients;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LoraExperts;
import org.sparkmoe.experts.LoraGradients;
import org.sparkmoe.experts.LowRankAdapters;
import org.sparkmoe.experts.LowRankExperts;
import org.sparkmoe.experts.SharedExpert;
import org.sparkmoe.experts.TrExperts;
import org.sparkmoe.kernels.StepWorkspace;
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.OwnedArrays;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.LoadBalancingLoss;
import org.sparkmoe.routing.RouterOptions;

/**
 * One LoRA training step on a frozen model, Spark-free:
 * <pre>
 *   blocks  = every MoE layer's block with the state's LoRA (and router)
 *             (a μMoE adapter instead: the model asks the state's μMoE terms beside its projections, see AdapterTerms)
 *   logits  = model.forwardTraining(windows, blocks)          [B·S, V], router logits L × [B·S, E]
 *   loss    = CE(logits, windows) + coef · LB(router logits)
 *   grads   = model.backward(dCE/dlogits, coef · dLB/dlogits) keyed like the state
 *             (with checkpointed activations the forward keeps layer inputs and the backward recomputes each layer)
 *   clip grads to the global norm; AdamW with lr = schedule(step)
 * </pre>
 * Deterministic: the same model, state, windows and options give the same bits.
 */
public final class TrainStep {
    private TrainStep() {
    }

    /**
     * The loss and its gradients at the current state, nothing updated.
     *
     * @param ce    mean cross-entropy
     * @param aux   load-balancing loss (unweighted)
     * @param loss  ce + coef · aux
     * @param grads  dLoss/dθ, keys and order of {@code state.params()}; null from {@link #losses}
     * @param tokens B·S
     * @param scored B·(S−1)
     */
    public record Evaluation(double ce, double aux, double loss, LinkedHashMap<String, INDArray> grads,
                             long tokens, long scored) {
    }

    /** Runs one step on {@code windows} (B windows of S ≥ 2 tokens), updating {@code state} in place. */
    public static StepResult run(MoeTransformer model, TrainState state, int[][] windows, TrainOptions opts) {
        Evaluation e = evaluate(model, state, windows, opts);
        double norm = GradClip.clip(e.grads(), opts.maxGradNorm());
        double lr = opts.schedule().at(state.step());
        opts.optimizer().update(state, e.grads(), lr);
        e.grads().values().forEach(TrainStep::free);
        return new StepResult(e.loss(), e.ce(), e.aux(), e.tokens(), e.scored(), lr, norm, state.step());
    }

    /** Forward and backward at the current state (the model's and the state's types must agree). */
    public static Evaluation evaluate(MoeTransformer model, TrainState state, int[][] windows, TrainOptions opts) {
        return pass(model, state, windows, opts, true);
    }

    /** The losses at the current state, forward only (validation, finite differences); grads are null. */
    public static Evaluation losses(MoeTransformer model, TrainState state, int[][] windows, TrainOptions opts) {
        return pass(model, state, windows, opts, false);
    }

    /**
     * The load-balancing loss weight: --aux-loss-coef, else config.json's router_aux_loss_coef. Sigmoid routers
     * (glm4_moe) have none: transformers' Glm4Moe computes no auxiliary loss (its e_score_correction_bias balances the
     * load instead, outside gradient descent), so their weight is 0 and an explicit one is refused.
     */
    public static double auxLossCoef(ModelConfig c, TrainOptions opts) {
        if (!balanced(c)) {
            if (opts.auxLossCoef() != null && opts.auxLossCoef() != 0) {
                throw new IllegalArgumentException("--aux-loss-coef " + opts.auxLossCoef() + ": model_type "
                        + c.modelType.name().toLowerCase() + " routes by sigmoid scores and defines no load-balancing "
                        + "loss (its e_score_correction_bias balances the load)");
            }
            return 0.0;
        }
        return opts.auxLossCoef() == null ? c.router_aux_loss_coef : opts.auxLossCoef();
    }

    /** Whether the model's routers have a load-balancing loss (softmax routers; Switch-style, as transformers). */
    private static boolean balanced(ModelConfig c) {
        return c.routing.scoring_func().equals("softmax");
    }

    private static Evaluation pass(MoeTransformer model, TrainState state, int[][] windows, TrainOptions opts,
                                   boolean backward) {
        checkMatches(model, state, opts.lora());
        ModelConfig c = model.config();
        double coef = auxLossCoef(c, opts);
        List<MoeBlock> blocks = blocks(model, state, opts.lora());
        MoeTransformer adapted = opts.lora().mumoe() == null ? model
                : model.withTerms(opts.lora().mumoe().terms(c, state.params()), new OwnedArrays()); // the state owns them
        List<Integer> moeLayers = new ArrayList<>();
        for (int l = 0; l < model.layers().size(); l++) {
            if (model.layers().get(l).isMoe()) {
                moeLayers.add(l);
            }
        }
        if (!opts.passWorkspace()) {
            return forwardBackward(adapted, windows, blocks, moeLayers, state, opts, backward, coef);
        }
        Evaluation e;
        try (MemoryWorkspace pass = StepWorkspace.pass()) {          // only the gradients outlive it
            e = forwardBackward(adapted, windows, blocks, moeLayers, state, opts, backward, coef);
            if (e.grads() != null) {
                e.grads().replaceAll((key, g) -> StepWorkspace.keep(g));
            }
        }
        return e;
    }

    /** Forward, loss and (when {@code backward}) backward of {@code adapted}, the model with the state's terms. */
    private static Evaluation forwardBackward(MoeTransformer adapted, int[][] windows, List<MoeBlock> blocks,
                                              List<Integer> moeLayers, TrainState state, TrainOptions opts,
                                              boolean backward, double coef) {
        ModelConfig c = adapted.config();
        int topK = c.num_experts_per_tok;
        TrainableKeys keys = new TrainableKeys(c.modelType);
        MoeTransformer.TrainingContext ctx = adapted.forwardTraining(windows, blocks,
                Seeds.derive(opts.seed(), "jitter/step/" + state.step()), backward && opts.checkpointActivations());
        CausalLmLoss.HeadResult ce = CausalLmLoss.throughHead(ctx.finalHidden(), adapted.ends().lmHeadWeight(),
                windows, backward);                                                           // dHidden [B·S, D]
        LoadBalancingLoss balancing = balanced(c) || (backward && coef != 0)
                ? LoadBalancingLoss.of(ctx.routerLogits(), c.num_experts, topK) : null;   // its sums, once
        double aux = balanced(c) ? balancing.value() : 0.0;
        long tokens = (long) windows.length * windows[0].length;
        if (!backward) {
            return new Evaluation(ce.value(), aux, ce.value() + coef * aux, null, tokens, ce.scored());
        }
        List<INDArray> dRouterLogits = coef == 0 ? null : balancing.gradient(coef);
        MoeTransformer.Gradients grads = adapted.backward(ctx, ce.dHidden(), dRouterLogits);
        free(ce.dHidden());                                                                   // [B·S, D]

        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        if (opts.lora().mumoe() != null) {
            for (MumoeConfig.Placement p : opts.lora().mumoe().placements(c)) {
                grads.terms().get(p.key()).parameters().forEach((name, g) -> out.put(p.prefix() + name, g));
            }
        }
        for (int i = 0; i < moeLayers.size(); i++) {
            int l = moeLayers.get(i);
            ExpertGradients ffn = grads.moe().get(i).experts();
            for (Projection p : opts.lora().targets()) {
                LoraGradients g = switch (p) {
                    case GATE -> ffn.gate();
                    case UP -> ffn.up();
                    case DOWN -> ffn.down();
                };
                out.put(keys.loraA(l, p), g.dA());
                out.put(keys.loraB(l, p), g.dB());
            }
            if (opts.lora().sharedExpert()) {
                SharedExpert.Gradients shared = grads.moe().get(i).shared();
                for (Projection p : opts.lora().targets()) {
                    LoraGradients g = switch (p) {
                        case GATE -> shared.gate();
                        case UP -> shared.up();
                        case DOWN -> shared.down();
                    };
                    out.put(keys.sharedLoraA(l, p), g.dA());                                  // [1, R, in]
                    out.put(keys.sharedLoraB(l, p), g.dB());                                  // [1, out, R]
                }
            }
            if (opts.lora().trainRouter()) {
                out.put(keys.router(l), grads.moe().get(i).dRouter());
                if (keys.hasRouterBias()) {
                    out.put(keys.routerBias(l), grads.moe().get(i).dRouterBias());
                }
            }
        }
        TrainState.checkLike("gradients", state.params(), out);
        return new Evaluation(ce.value(), aux, ce.value() + coef * aux, out, tokens, ce.scored());
    }

    /**
     * Frees an array no one reads any more now, instead of when the garbage collector finds its wrapper: the logits
     * and their gradient (B·S × V floats each, the largest arrays of a step) and the applied gradients would otherwise
     * pile up off the heap between collections of a mostly idle heap.
     */
    public static void free(INDArray done) {
        if (done.closeable()) {
            done.close();
        }
    }

    /**
     * Every MoE layer's trainable block, in layer order, with the state's LoRA factors (and router, when trained),
     * the model's top-K and renormalisation and config.json's router jitter.
     */
    public static List<MoeBlock> blocks(MoeTransformer model, TrainState state, LoraSpec spec) {
        ModelConfig c = model.config();
        TrainableKeys keys = new TrainableKeys(c.modelType);
        List<MoeBlock> blocks = new ArrayList<>();
        for (int l = 0; l < model.layers().size(); l++) {
            DecoderLayer layer = model.layers().get(l);
            if (layer.isMoe()) {
                blocks.add(block(layer.moe(), l, state, spec, keys, c));
            }
        }
        return blocks;
    }

    /** Throws naming the first tensor the spec implies that the state lacks, or the first it holds beyond them. */
    private static void checkMatches(MoeTransformer model, TrainState state, LoraSpec spec) {
        List<String> expected = TrainState.keys(model, spec);
        List<String> actual = new ArrayList<>(state.params().keySet());
        if (expected.equals(actual)) {
            return;
        }
        for (String key : expected) {
            if (!state.params().containsKey(key)) {
                throw new IllegalArgumentException("the training state has no tensor " + key + ", which the LoRA spec "
                        + spec + " implies");
            }
        }
        for (String key : actual) {
            if (!expected.contains(key)) {
                throw new IllegalArgumentException("the training state holds " + key + ", which the LoRA spec "
                        + spec + " does not train");
            }
        }
        throw new IllegalArgumentException("the training state's tensors are not in the contract order: "
                + actual + ", expected " + expected);
    }

    private static MoeBlock block(MoeBlock moe, int l, TrainState state, LoraSpec spec, TrainableKeys keys,
                                  ModelConfig c) {
        RouterOptions options = moe.options().withTopK(c.num_experts_per_tok).withJitter(c.router_jitter_noise)
                .withTrainable(spec.trainRouter());
        INDArray router = spec.trainRouter() ? param(state, keys.router(l)) : null;
        TrainState.checkShared(c, spec);
        INDArray routerBias = spec.trainRouter() && keys.hasRouterBias() ? param(state, keys.routerBias(l)) : null;
        ExpertFfn experts = moe.experts();
        if (experts instanceof CpExperts || experts instanceof TrExperts) {
            TrainState.checkCpOrTr(c, spec);   // frozen, the router too: a μMoE adapter trains beside them
            return moe.with(null, null, options, experts);
        }
        if (experts instanceof LowRankExperts lowRank) {
            TrainState.checkLowRank(c, spec);
            return moe.with(router, routerBias, options, lowRank.with(lowRank.weights().withAdapters(new LowRankAdapters(
                    param(state, keys.loraA(l, Projection.GATE)), param(state, keys.loraB(l, Projection.GATE)),
                    param(state, keys.loraA(l, Projection.UP)), param(state, keys.loraB(l, Projection.UP)),
                    param(state, keys.loraA(l, Projection.DOWN)), param(state, keys.loraB(l, Projection.DOWN)),
                    spec.scale()))));
        }
        FullExperts full = (FullExperts) experts;
        MoeBlock block = moe.with(router, routerBias, options, full.withLora(lora(state, spec, keys, l, Projection.GATE),
                lora(state, spec, keys, l, Projection.UP), lora(state, spec, keys, l, Projection.DOWN)));
        if (!spec.sharedExpert()) {
            return block;
        }
        return block.withShared(block.shared().withLora(sharedLora(state, spec, keys, l, Projection.GATE),
                sharedLora(state, spec, keys, l, Projection.UP), sharedLora(state, spec, keys, l, Projection.DOWN)));
    }

    private static LoraExperts sharedLora(TrainState state, LoraSpec spec, TrainableKeys keys, int l, Projection p) {
        if (!spec.targets().contains(p)) {
            return null;
        }
        return new LoraExperts(param(state, keys.sharedLoraA(l, p)), param(state, keys.sharedLoraB(l, p)),
                spec.alpha());
    }

    private static LoraExperts lora(TrainState state, LoraSpec spec, TrainableKeys keys, int l, Projection p) {
        if (!spec.targets().contains(p)) {
            return null;
        }
        return new LoraExperts(param(state, keys.loraA(l, p)), param(state, keys.loraB(l, p)), spec.alpha());
    }

    private static INDArray param(TrainState state, String key) {
        return state.params().get(key);
    }
}
