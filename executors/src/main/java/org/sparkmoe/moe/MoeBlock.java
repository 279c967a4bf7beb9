package org.sparkmoe.moe;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.ExpertFfn;
import org.sparkmoe.experts.ExpertGradients;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.SharedExpert;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.Routes;

/**
 * One MoE block: routing + routed experts ({@link ExpertFfn}) + an optional shared expert, for inference and for
 * training (FLOAT for speed, DOUBLE for gradient checks):
 * <pre>
 *   xj      = x ⊙ noise                      [T, D]  (jitter, training only; else xj = x)
 *   logits  = xj·Wgᵀ + b                     [T, E]
 *   routes  = the rule's scores, top-K, weights g [T, K], the plan (pairs sorted by expert)
 *   out     = Σ_k g_k · expert_k(xj)         [T, D]  the routed experts
 *   out    += sigmoid(x·Wsgᵀ) ⊙ shared(x)   [T, D]  the shared expert (ungated: out += shared(x)), when present
 * </pre>
 * The shared expert's weights are frozen; a trainable block may carry LoRA on them ({@link #withShared}).
 * Backward runs the same steps in reverse: the input gets gradient through the experts and through the router;
 * the routing decision (which K experts) is constant, as autograd treats it; the router weight gets gradient
 * through the scores of the selected experts, including the renormalisation, when trainable. Stateless per call
 * (safe for concurrent Spark tasks).
 */
public final class MoeBlock {
    private final Router router;
    private final RouterOptions options;
    private final ExpertFfn experts;
    private final SharedExpert shared;     // null without a shared expert

    public MoeBlock(Router router, RouterOptions options, ExpertFfn experts, SharedExpert shared) {
        int numExperts = experts.experts();
        INDArray w = router.weight();
        if (w.size(0) != numExperts || w.size(1) != experts.hidden() || w.dataType() != experts.dataType()) {
            throw new IllegalArgumentException("router weight must be [E, D] = [" + numExperts + ", "
                    + experts.hidden() + "] " + experts.dataType() + " like the experts, got "
                    + Arrays.toString(w.shape()) + " " + w.dataType());
        }
        if (options.topK() > numExperts) {
            throw new IllegalArgumentException("top-k must be in [1, " + numExperts + "], got " + options.topK());
        }
        if (shared != null) {
            shared.checkFits(experts.hidden(), experts.dataType());
        }
        this.router = router;
        this.options = options;
        this.experts = experts;
        this.shared = shared;
    }

    /** The same block with another router weight (a trainable copy, or null: this one), options and experts. */
    public MoeBlock with(INDArray routerWeight, RouterOptions opts, ExpertFfn ffn) {
        return with(routerWeight, null, opts, ffn);
    }

    /**
     * The same block with another router weight and, for a router with a bias (gpt-oss), another bias (trainable
     * copies; a null weight keeps this router, a null bias keeps its bias), options and experts.
     */
    public MoeBlock with(INDArray routerWeight, INDArray routerBias, RouterOptions opts, ExpertFfn ffn) {
        Router r = routerWeight == null ? router
                : routerBias == null ? router.withWeight(routerWeight) : router.withWeightAndBias(routerWeight, routerBias);
        return new MoeBlock(r, opts, ffn, shared);
    }

    /** The same block with another shared expert (a copy with LoRA); throws when this block has none. */
    public MoeBlock withShared(SharedExpert adapted) {
        if (shared == null || adapted == null) {
            throw new IllegalArgumentException("withShared replaces a block's shared expert, got "
                    + (shared == null ? "a block without one" : "null"));
        }
        return new MoeBlock(router, options, experts, adapted);
    }

    /** @return the shared expert, null without one */
    public SharedExpert shared() {
        return shared;
    }

    public Router router() {
        return router;
    }

    public RouterOptions options() {
        return options;
    }

    public ExpertFfn experts() {
        return experts;
    }

    /**
     * Output of an inference pass: the mixture [T, D], the raw router logits [T, E] and, for full experts, every routed
     * row as the pass computed it (null for low-rank experts).
     */
    public record Output(INDArray hidden, INDArray routerLogits, FullExperts.RoutedRows routed) {
    }

    /** Inference: x [T, D] → Output, {@code topK} experts per token, no jitter. */
    public Output forward(INDArray x, int topK) {
        Context ctx = atTopK(topK).forward(x, null);
        return new Output(ctx.out, ctx.logits,
                experts instanceof FullExperts full ? full.routedRows(ctx.routed) : null);
    }

    private MoeBlock atTopK(int topK) {
        return topK == options.topK() ? this : new MoeBlock(router, options.withTopK(topK), experts, shared);
    }

    /*
     * The inference forward in three steps, for a pass that runs a layer's experts in groups as separate tasks:
     * route(x) → expertOutputs(x, routes, from, to) per group of experts → combine(x, routes, rows of every group in
     * group order). The same operations as forward(x, topK), so the same bits for any grouping.
     */

    /** The inference routing decision of x [T, D] at {@code topK} experts per token (no jitter). */
    public Routes route(INDArray x, int topK) {
        checkTokens("x", x, x.size(0));
        MoeBlock block = atTopK(topK);
        return router.route(router.logits(x), block.options.rule());
    }

    /** G + 1 bounds of G contiguous groups of the E experts: group g is experts bounds[g]..bounds[g+1]-1. */
    public int[] expertGroups(int groups) {
        int e = experts.experts();
        if (groups < 1 || groups > e) {
            throw new IllegalArgumentException("expert groups must be in [1, " + e + "] (the experts), got " + groups);
        }
        int[] bounds = new int[groups + 1];
        for (int g = 0; g <= groups; g++) {
            bounds[g] = (int) ((long) g * e / groups);
        }
        return bounds;
    }

    /** The routed rows experts {@code from..to-1} own, before their routing weights: [N_g, D] in plan order. */
    public INDArray expertOutputs(INDArray x, Routes routes, int from, int to) {
        return fullExperts().expertOutputs(x, routes.plan, from, to);
    }

    /**
     * The block's output from every routed row's expert output {@code ys} [N, D] (plan order: the groups' rows one
     * after another): the routed experts' combine, then the shared expert, as {@link #forward(INDArray, int)}.
     */
    public INDArray combine(INDArray x, Routes routes, INDArray ys) {
        checkTokens("x", x, x.size(0));
        return plusShared(x, fullExperts().combine(ys, routes, (int) x.size(0))).out();
    }

    private FullExperts fullExperts() {
        if (!(experts instanceof FullExperts full)) {
            throw new IllegalArgumentException("only full experts run in groups, got "
                    + experts.getClass().getSimpleName());
        }
        return full;
    }

    /** routed [T, D] + the shared expert's output of x (gated), when the block has one. */
    private Summed plusShared(INDArray x, INDArray routed) {
        if (shared == null) {
            return new Summed(routed, null);
        }
        double[] sum = Flat.values(routed);
        SharedExpert.Pass pass = shared.addTo(x, sum, x.dataType() == DataType.FLOAT);
        return new Summed(Flat.array(sum, routed.shape(), routed.dataType()), pass);
    }

    private record Summed(INDArray out, SharedExpert.Pass pass) {
    }

    /** The forward result and what {@link #backward} needs; immutable once built. */
    public static final class Context {
        private final INDArray xj;                  // [T, D] the input after jitter
        private final INDArray noise;               // [T, D], null without jitter
        private final INDArray logits;              // [T, E]
        private final Routes routes;
        private final ExpertFfn.Pass routed;
        private final SharedExpert.Pass sharedPass; // null without a shared expert
        private final INDArray out;                 // [T, D]

        private Context(INDArray xj, INDArray noise, INDArray logits, Routes routes, ExpertFfn.Pass routed,
                        SharedExpert.Pass sharedPass, INDArray out) {
            this.xj = xj;
            this.noise = noise;
            this.logits = logits;
            this.routes = routes;
            this.routed = routed;
            this.sharedPass = sharedPass;
            this.out = out;
        }

        /** @return [T, D] */
        public INDArray out() {
            return out;
        }

        /** @return [T, E] the logits the scores see (x·Wgᵀ + b): what the load-balancing loss takes */
        public INDArray routerLogits() {
            return logits;
        }

        /** @return the routing decision */
        public Routes routes() {
            return routes;
        }
    }

    /**
     * @param dx          [T, D]
     * @param dRouter     [E, D], null when the router is not trainable
     * @param dRouterBias [E], null when the router is not trainable or has no bias (gpt-oss has one)
     * @param experts     the experts' gradients (LoRA, dL/dg)
     * @param shared      the shared expert's LoRA gradients, null without a shared expert
     */
    public record Gradients(INDArray dx, INDArray dRouter, INDArray dRouterBias, ExpertGradients experts,
                            SharedExpert.Gradients shared) {
    }

    /** Evaluation of the training pass: no jitter. x [T, D]. */
    public Context forward(INDArray x) {
        return forward(x, null);
    }

    /** Training: multiplies x by U(1 − j, 1 + j) noise drawn from {@code jitterSeed} when the jitter j is > 0. */
    public Context forwardTraining(INDArray x, long jitterSeed) {
        return forward(x, options.jitter() > 0 ? noise(x, jitterSeed) : null);
    }

    private Context forward(INDArray x, INDArray noise) {
        checkTokens("x", x, x.size(0));
        INDArray xj = noise == null ? x : x.mul(noise);                                       // [T, D]
        INDArray logits = router.logits(xj);                                                  // [T, E]
        Routes routes = router.route(logits, options.rule());
        ExpertFfn.Pass routed = experts.forward(xj, routes);                                 // [T, D]
        Summed out = plusShared(x, routed.out());
        return new Context(xj, noise, logits, routes, routed, out.pass(), out.out());
    }

    /** {@link #backward(Context, INDArray, INDArray)} without a gradient on the router logits. */
    public Gradients backward(Context ctx, INDArray dOut) {
        return backward(ctx, dOut, null);
    }

    /**
     * @param dOut          [T, D] gradient of the loss with respect to {@code ctx.out()}
     * @param dRouterLogits [T, E] gradient with respect to {@code ctx.routerLogits()} from a loss on them (the
     *                      load-balancing loss), or null
     */
    public Gradients backward(Context ctx, INDArray dOut, INDArray dRouterLogits) {
        checkTokens("dOut", dOut, ctx.out.size(0));
        if (dRouterLogits != null && !Arrays.equals(dRouterLogits.shape(), ctx.logits.shape())) {
            throw new IllegalArgumentException("dRouterLogits must be [T, E] " + Arrays.toString(ctx.logits.shape())
                    + ", got " + Arrays.toString(dRouterLogits.shape()));
        }
        // experts: dx through the experts, dL/dg per pair
        ExpertGradients ffn = experts.backward(ctx.routed, dOut);

        // routing: g from the scores of the logits, the selection constant
        double[] dz = dRouterLogits == null ? new double[(int) ctx.logits.length()] : Flat.values(dRouterLogits);
        ctx.routes.backward(ffn.dWeights(), dz);

        // logits = xj·Wgᵀ + b  →  dWg = dlogitsᵀ·xj, db = Σ_t dlogits[t], dxj += dlogits·Wg
        INDArray dLogits = Flat.array(dz, ctx.logits.shape(), ctx.logits.dataType());         // [T, E]
        INDArray dRouter = null;
        INDArray dRouterBias = null;
        if (options.trainable()) {
            INDArray w = router.weight();
            dRouter = Nd4j.createUninitialized(w.dataType(), w.shape(), 'c');                 // [E, D]
            Nd4j.gemm(dLogits, ctx.xj, dRouter, true, false, 1.0, 0.0);
            dRouterBias = router.bias() == null ? null : dLogits.sum(0);                      // [E]
        }
        INDArray dx = ffn.dx();                                                               // [T, D]
        Nd4j.gemm(dLogits, router.weight(), dx, false, false, 1.0, 1.0);

        // jitter: xj = x ⊙ noise
        if (ctx.noise != null) {
            dx.muli(ctx.noise);
        }

        // shared expert: out += σ(x·Wsgᵀ) ⊙ shared(x)
        SharedExpert.Gradients dShared = ctx.sharedPass == null ? null : shared.backward(ctx.sharedPass, dOut, dx);
        return new Gradients(dx, dRouter, dRouterBias, ffn, dShared);
    }

    /** U(1 − j, 1 + j) [T, D] in 'c' order from one seeded generator. */
    private INDArray noise(INDArray x, long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        double j = options.jitter();
        double[] v = new double[(int) x.length()];
        for (int i = 0; i < v.length; i++) {
            v[i] = 1.0 - j + 2.0 * j * random.nextDouble();
        }
        return Flat.array(v, x.shape(), x.dataType());
    }

    private void checkTokens(String name, INDArray a, long tokens) {
        int hidden = experts.hidden();
        if (a.rank() != 2 || a.size(0) != tokens || a.size(1) != hidden || a.dataType() != experts.dataType()) {
            throw new IllegalArgumentException(name + " must be [" + tokens + ", " + hidden + "] "
                    + experts.dataType() + " (T, D), got " + Arrays.toString(a.shape()) + " " + a.dataType());
        }
    }
}
