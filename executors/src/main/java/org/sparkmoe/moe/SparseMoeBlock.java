package org.sparkmoe.moe;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.lora.LoraExpertFfn;
import org.sparkmoe.lora.LoraExperts;
import org.sparkmoe.lora.SharedBaseAdapters;
import org.sparkmoe.lora.SharedBaseLoraFactorised;
import org.sparkmoe.lora.SharedBaseLoraWeights;

/**
 * A sparse MoE block: router → routing plan → the experts through grouped GEMMs → weighted
 * scatter-add, plus Qwen2-MoE's shared expert scaled by {@code sigmoid(x·Wsgᵀ)}. Or, for a model converted by
 * {@code surgery lowrank}, one shared base FFN plus E low-rank experts computed in factorised form
 * ({@link SharedBaseLoraFactorised}, the shared-base path). Stateless per call (safe for concurrent Spark tasks).
 */
public final class SparseMoeBlock {
    private final Router router;
    private final ExpertWeights experts;
    private final LowRankExperts lowRank;      // null for full experts
    private final SwiGluMlp sharedExpert;      // null without a shared expert
    private final INDArray sharedExpertGate;   // [1, D], null without a shared expert
    private final GroupedGemm gemm;

    /**
     * The experts of a low-rank-expert layer: the shared base [I, D], [I, D], [D, I] every token uses and the E
     * stacked LoRA experts; expert e's projection P is {@code W_P + scale·B_{P,e}·A_{P,e}}.
     */
    public record LowRankExperts(INDArray w1, INDArray w3, INDArray w2, SharedBaseAdapters adapters) {
    }

    public SparseMoeBlock(Router router, ExpertWeights experts, SwiGluMlp sharedExpert, INDArray sharedExpertGate,
                          GroupedGemm gemm) {
        this(router, experts, null, sharedExpert, sharedExpertGate, gemm);
    }

    /** A low-rank-expert block (Mixtral semantics, no shared expert). */
    public static SparseMoeBlock lowRank(Router router, LowRankExperts experts, GroupedGemm gemm) {
        return new SparseMoeBlock(router, null, experts, null, null, gemm);
    }

    private SparseMoeBlock(Router router, ExpertWeights experts, LowRankExperts lowRank, SwiGluMlp sharedExpert,
                           INDArray sharedExpertGate, GroupedGemm gemm) {
        this.router = router;
        this.experts = experts;
        this.lowRank = lowRank;
        this.sharedExpert = sharedExpert;
        this.sharedExpertGate = sharedExpertGate;
        this.gemm = gemm;
    }

    public int experts() {
        return lowRank != null ? lowRank.adapters().experts() : experts.experts();
    }

    /** The stacked expert weights (read-only use: calibration runs tokens through them). */
    public ExpertWeights expertWeights() {
        requireFullExperts("per-expert weights");
        return experts;
    }

    /** Whether this block holds a shared base plus low-rank experts. */
    public boolean isLowRank() {
        return lowRank != null;
    }

    private void requireFullExperts(String what) {
        if (lowRank != null) {
            throw new IllegalArgumentException("this MoE layer holds a shared base and low-rank experts (surgery lowrank), "
                    + "not " + what);
        }
    }

    public Router router() {
        return router;
    }

    /** @return the frozen router weight [E, D] */
    public INDArray routerWeight() {
        return router.gate();
    }

    /** This model's routing for training: top-K, its renormalisation, τ = 1, no jitter, router frozen. */
    public RouterOptions routerOptions(int topK) {
        return new RouterOptions(topK, router.normalizeTopK(), 1.0, 0.0, false);
    }

    /**
     * The same block, trainable: frozen experts (and shared expert) with LoRA on any of the three projections.
     *
     * @param routerWeight [E, D] the router to use (a trainable copy), or null for the frozen one
     * @param gate         LoRA on w1 / gate_proj, or null
     * @param up           LoRA on w3 / up_proj, or null
     * @param down         LoRA on w2 / down_proj, or null
     */
    public LoraMoeBlock withLora(INDArray routerWeight, RouterOptions options, LoraExperts gate, LoraExperts up,
                                 LoraExperts down) {
        requireFullExperts("the full experts LoRA training adapts");
        return new LoraMoeBlock(routerWeight == null ? router.gate() : routerWeight, options,
                new LoraExpertFfn(experts, gate, up, down, gemm), sharedExpert, sharedExpertGate);
    }

    /** The shared base and LoRA experts of a low-rank-expert block (read-only use: training starts from them). */
    public LowRankExperts lowRankExperts() {
        if (lowRank == null) {
            throw new IllegalArgumentException("this MoE layer holds full experts, not a shared base and low-rank experts");
        }
        return lowRank;
    }

    /**
     * A low-rank-expert block, trainable: the frozen shared base with the given LoRA experts (what training updates;
     * the same shapes as the block's own).
     *
     * @param routerWeight [E, D] the router to use (a trainable copy), or null for the frozen one
     */
    public LoraMoeBlock withSharedBaseLora(INDArray routerWeight, RouterOptions options, SharedBaseAdapters adapters) {
        LowRankExperts base = lowRankExperts();
        return LoraMoeBlock.sharedBase(routerWeight == null ? router.gate() : routerWeight, options, base.w1(),
                base.w3(), base.w2(), adapters, gemm);
    }

    /** Output of one block: the mixture [T, D] and the raw router logits [T, E]. */
    public record Output(INDArray hidden, INDArray routerLogits) {
    }

    /** x [T, D] → Output; {@code topK} experts per token. */
    public Output forward(INDArray x, int topK) {
        if (lowRank != null) {
            INDArray logits = router.logits(x);                                      // [T, E]
            SharedBaseLoraWeights w = new SharedBaseLoraWeights(lowRank.w1(), lowRank.w3(), lowRank.w2(), router.gate(),
                    lowRank.adapters(), topK, router.normalizeTopK());
            return new Output(new SharedBaseLoraFactorised(gemm).forward(w, x).output(), logits);
        }
        int tokens = (int) x.size(0);
        int hidden = (int) x.size(1);
        INDArray logits = router.logits(x);                                          // [T, E]
        Routing routing = router.route(logits, topK);
        RoutingPlan plan = RoutingPlan.build(routing.experts(), routing.weights(), experts(), topK);

        INDArray xs = Nd4j.pullRows(x, 1, plan.tokenOfRow);                          // [T·K, D] by expert
        int intermediate = (int) experts.w1().size(1);
        INDArray h1 = Nd4j.createUninitialized(DataType.FLOAT, new long[] {plan.rows(), intermediate}, 'c');
        INDArray h3 = Nd4j.createUninitialized(DataType.FLOAT, new long[] {plan.rows(), intermediate}, 'c');
        gemm.forward(xs, experts.w1(), plan.offsets, h1);                            // [T·K, I]
        gemm.forward(xs, experts.w3(), plan.offsets, h3);                            // [T·K, I]
        INDArray act = Activations.swiGlu(h1, h3, gemm.workers());                   // [T·K, I]
        INDArray ys = Nd4j.createUninitialized(DataType.FLOAT, new long[] {plan.rows(), hidden}, 'c');
        gemm.forward(act, experts.w2(), plan.offsets, ys);                           // [T·K, D]

        float[] out = new float[tokens * hidden];                                    // [T, D]
        combine(plan, ys.data().asFloat(), hidden, out);
        if (sharedExpert != null) {
            addGatedSharedExpert(x, out);
        }
        return new Output(Nd4j.create(out, new long[] {tokens, hidden}, 'c'), logits);
    }

    /** out[token] += g · y[row], rows in expert order (the order transformers' index_add_ uses). */
    private static void combine(RoutingPlan plan, float[] ys, int hidden, float[] out) {
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            int y = row * hidden;
            float g = plan.weightOfRow[row];
            for (int d = 0; d < hidden; d++) {
                out[o + d] += g * ys[y + d];
            }
        }
    }

    /** out += sigmoid(x·Wsgᵀ) ⊙ shared_expert(x). */
    private void addGatedSharedExpert(INDArray x, float[] out) {
        float[] shared = sharedExpert.forward(x).data().asFloat();                  // [T, D]
        float[] gateLogit = Dense.linear(x, sharedExpertGate).data().asFloat();     // [T, 1]
        int hidden = (int) x.size(1);
        for (int t = 0; t < gateLogit.length; t++) {
            float gate = (float) (1.0 / (1.0 + Math.exp(-gateLogit[t])));
            for (int d = 0; d < hidden; d++) {
                out[t * hidden + d] += gate * shared[t * hidden + d];
            }
        }
    }
}
