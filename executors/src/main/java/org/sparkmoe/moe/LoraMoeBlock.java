package org.sparkmoe.moe;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.lora.LoraExpertFfn;
import org.sparkmoe.lora.LoraGradients;
import org.sparkmoe.lora.SharedBaseAdapters;
import org.sparkmoe.lora.SharedBaseGradients;
import org.sparkmoe.lora.SharedBaseLoraExperts;
import org.sparkmoe.lora.SharedBaseLoraFactorised;
import org.sparkmoe.lora.SharedBaseLoraWeights;

/**
 * A sparse MoE block for LoRA training, forward and backward (FLOAT for speed, DOUBLE for gradient checks):
 * <pre>
 *   xj      = x ⊙ noise                      [T, D]  (jitter, training only; else xj = x)
 *   logits  = xj·Wgᵀ / τ                     [T, E]
 *   p       = softmax(logits)                [T, E]  then top-K, renormalised as the model does → g [T, K]
 *   plan    = the T·K (token, slot) pairs sorted by expert
 *   xs      = xj[tokenOfRow]                 [N, D]  N = T·K, plan order
 *   ys      = experts(xs)                    [N, D]  LoRA SwiGLU experts over grouped GEMMs
 *   out[t] += g · ys[row]                    [T, D]  rows in plan order
 *   out    += sigmoid(x·Wsgᵀ) ⊙ shared(x)   [T, D]  Qwen2-MoE's shared expert (frozen), when present
 * </pre>
 * Backward runs the same steps in reverse: the input gets gradient through the experts and through the router;
 * the routing decision (which K experts) is constant, as autograd treats it; the router weights get gradient
 * through the softmax of the selected experts including the renormalisation. In FLOAT the forward is
 * bit-identical to {@link SparseMoeBlock} when every LoRA B is zero.
 *
 * <p>A block of a low-rank-expert model ({@link #sharedBase}, from {@code surgery lowrank}) runs the routed part as
 * the shared-base MoLoRA FFN instead ({@link SharedBaseLoraFactorised}: per token one SwiGLU FFN with weights
 * base + Σ_k g_k·s·B_k·A_k, exactly what inference runs), trains its stacked LoRA experts, and keeps the jitter, the
 * router logits for the load-balancing loss and the router gradient as above. Stateless per call.
 */
public final class LoraMoeBlock {
    private final INDArray routerWeight;   // [E, D]
    private final RouterOptions options;
    private final LoraExpertFfn experts;       // null for a shared-base block
    private final SharedBaseWeights sharedBase; // null for full experts
    private final SwiGluMlp sharedExpert;      // null without a shared expert
    private final INDArray sharedExpertGate;   // [1, D], null without a shared expert
    private final int numExperts;
    private final int hidden;
    private final DataType dataType;

    /** The frozen shared base [I, D], [I, D], [D, I], the trainable LoRA experts and the GEMM of a shared-base block. */
    private record SharedBaseWeights(INDArray w1, INDArray w3, INDArray w2, SharedBaseAdapters adapters,
                                     GroupedGemm gemm) {
    }

    /** A block without a shared expert (Mixtral). */
    public LoraMoeBlock(INDArray routerWeight, RouterOptions options, LoraExpertFfn experts) {
        this(routerWeight, options, experts, null, null);
    }

    /** A block with Qwen2-MoE's frozen shared expert scaled by sigmoid(x·Wsgᵀ); both null without one. */
    public LoraMoeBlock(INDArray routerWeight, RouterOptions options, LoraExpertFfn experts, SwiGluMlp sharedExpert,
                        INDArray sharedExpertGate) {
        this(routerWeight, options, experts, null, sharedExpert, sharedExpertGate, experts.experts(), experts.hidden(),
                experts.dataType());
    }

    /**
     * A shared-base block (a low-rank-expert model, Mixtral semantics, no shared expert): the routed part is
     * {@code base + Σ_k g_k·s·B_k·A_k} per token; τ must be 1.
     *
     * @param w1 [I, D] frozen
     * @param w3 [I, D] frozen
     * @param w2 [D, I] frozen
     */
    public static LoraMoeBlock sharedBase(INDArray routerWeight, RouterOptions options, INDArray w1, INDArray w3,
                                          INDArray w2, SharedBaseAdapters adapters, GroupedGemm gemm) {
        if (options.temperature() != 1.0) {
            throw new IllegalArgumentException("a shared-base MoE block routes at temperature 1, got "
                    + options.temperature());
        }
        return new LoraMoeBlock(routerWeight, options, null, new SharedBaseWeights(w1, w3, w2, adapters, gemm), null,
                null, adapters.experts(), (int) w1.size(1), w1.dataType());
    }

    private LoraMoeBlock(INDArray routerWeight, RouterOptions options, LoraExpertFfn experts,
                         SharedBaseWeights sharedBase, SwiGluMlp sharedExpert, INDArray sharedExpertGate,
                         int numExperts, int hidden, DataType dataType) {
        this.numExperts = numExperts;
        this.hidden = hidden;
        this.dataType = dataType;
        if (routerWeight.rank() != 2 || routerWeight.size(0) != numExperts
                || routerWeight.size(1) != hidden || routerWeight.dataType() != dataType) {
            throw new IllegalArgumentException("router weight must be [E, D] = [" + numExperts + ", "
                    + hidden + "] " + dataType + " like the experts, got "
                    + Arrays.toString(routerWeight.shape()) + " " + routerWeight.dataType());
        }
        if (options.topK() > numExperts) {
            throw new IllegalArgumentException("top-k must be in [1, " + numExperts + "], got " + options.topK());
        }
        if ((sharedExpert == null) != (sharedExpertGate == null)) {
            throw new IllegalArgumentException("a shared expert needs its gate and a gate its expert, got expert "
                    + (sharedExpert == null ? "null" : "present") + ", gate "
                    + (sharedExpertGate == null ? "null" : Arrays.toString(sharedExpertGate.shape())));
        }
        if (sharedExpertGate != null && (sharedExpertGate.rank() != 2 || sharedExpertGate.size(0) != 1
                || sharedExpertGate.size(1) != hidden || sharedExpertGate.dataType() != dataType)) {
            throw new IllegalArgumentException("shared expert gate must be [1, D] = [1, " + hidden + "] "
                    + dataType + ", got " + Arrays.toString(sharedExpertGate.shape()) + " "
                    + sharedExpertGate.dataType());
        }
        this.routerWeight = routerWeight;
        this.options = options;
        this.experts = experts;
        this.sharedBase = sharedBase;
        this.sharedExpert = sharedExpert;
        this.sharedExpertGate = sharedExpertGate;
    }

    /** The forward result and what {@link #backward} needs; immutable once built. */
    public static final class Context {
        private final INDArray xj;                  // [T, D] the input after jitter
        private final INDArray noise;               // [T, D], null without jitter
        private final INDArray logits;              // [T, E] after the temperature
        private final double[] probs;               // [T·E] softmax of logits
        private final int[] selected;               // [T·K] expert of pair t·K + k
        private final double[] gates;               // [T·K] routing weight of pair t·K + k
        private final RoutingPlan plan;
        private final LoraExpertFfn.Context ffn;
        private final SwiGluMlp.Context shared;     // null without a shared expert
        private final double[] sharedGates;         // [T] sigmoid(x·Wsgᵀ), null without a shared expert
        private final INDArray out;                 // [T, D]
        private final SharedBaseLoraWeights baseWeights;  // shared-base block only: the weights of the pass
        private final SharedBaseLoraExperts.Pass basePass; // shared-base block only

        private Context(INDArray xj, INDArray noise, INDArray logits, double[] probs, int[] selected,
                        double[] gates, RoutingPlan plan, LoraExpertFfn.Context ffn, SwiGluMlp.Context shared,
                        double[] sharedGates, INDArray out, SharedBaseLoraWeights baseWeights,
                        SharedBaseLoraExperts.Pass basePass) {
            this.xj = xj;
            this.noise = noise;
            this.logits = logits;
            this.probs = probs;
            this.selected = selected;
            this.gates = gates;
            this.plan = plan;
            this.ffn = ffn;
            this.shared = shared;
            this.sharedGates = sharedGates;
            this.out = out;
            this.baseWeights = baseWeights;
            this.basePass = basePass;
        }

        /** @return [T, D] */
        public INDArray out() {
            return out;
        }

        /** @return [T, E] the logits the softmax sees (x·Wgᵀ / τ): what the load-balancing loss takes */
        public INDArray routerLogits() {
            return logits;
        }

        /** @return [T·K] a copy of the selected expert of each (token, slot), slots in descending weight */
        public int[] selectedExperts() {
            return selected.clone();
        }
    }

    /**
     * @param dx      [T, D]
     * @param dRouter [E, D], null when the router is not trainable
     * @param experts the LoRA gradients
     */
    public record Gradients(INDArray dx, INDArray dRouter, LoraExpertFfn.Gradients experts) {
    }

    /** Inference / evaluation: no jitter. x [T, D]. */
    public Context forward(INDArray x) {
        return forward(x, null);
    }

    /** Training: multiplies x by U(1 − j, 1 + j) noise drawn from {@code jitterSeed} when the jitter j is > 0. */
    public Context forwardTraining(INDArray x, long jitterSeed) {
        return forward(x, options.jitter() > 0 ? noise(x, jitterSeed) : null);
    }

    private Context forward(INDArray x, INDArray noise) {
        checkTokens("x", x, x.size(0));
        if (sharedBase != null) {
            return forwardSharedBase(x, noise);
        }
        int tokens = (int) x.size(0);
        int topK = options.topK();
        boolean single = x.dataType() == DataType.FLOAT;
        INDArray xj = noise == null ? x : x.mul(noise);                                       // [T, D]
        INDArray logits = Nd4j.createUninitialized(x.dataType(), new long[] {tokens, numExperts}, 'c'); // [T, E]
        Nd4j.gemm(xj, routerWeight, logits, false, true, 1.0, 0.0);                           // xj·Wgᵀ
        if (options.temperature() != 1.0) {
            logits.divi(options.temperature());                                               // / τ
        }

        double[] probs = Flat.values(logits);                                                 // [T·E]
        int[] selected = new int[tokens * topK];                                              // [T·K]
        double[] gates = new double[tokens * topK];                                           // [T·K]
        boolean[] taken = new boolean[numExperts];
        for (int t = 0; t < tokens; t++) {
            Routes.softmax(probs, t * numExperts, numExperts, single);
            Arrays.fill(taken, false);
            double sum = 0;
            for (int k = 0; k < topK; k++) {
                int e = Routes.argmaxNotTaken(probs, t * numExperts, numExperts, taken);
                taken[e] = true;
                selected[t * topK + k] = e;
                gates[t * topK + k] = probs[t * numExperts + e];
                sum = Flat.round(sum + gates[t * topK + k], single);
            }
            for (int k = 0; options.normalizeTopK() && k < topK; k++) {
                gates[t * topK + k] = Flat.round(gates[t * topK + k] / sum, single);
            }
        }
        float[] planWeights = new float[gates.length];
        for (int i = 0; i < gates.length; i++) {
            planWeights[i] = (float) gates[i];
        }
        RoutingPlan plan = RoutingPlan.build(selected, planWeights, numExperts, topK);

        INDArray xs = Nd4j.pullRows(xj, 1, plan.tokenOfRow);                                  // [N, D]
        LoraExpertFfn.Context ffn = experts.forward(xs, plan.offsets);                        // ys [N, D]

        NativeElements ys = rowsOf(ffn.ys());                                                 // [N, D]
        double[] y = new double[hidden];                                                      // one row
        float[] scratch = new float[hidden];
        double[] out = new double[tokens * hidden];                                           // [T, D]
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            double g = gates[plan.perm[row]];
            ys.read((long) row * hidden, y, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                out[o + d] = Flat.round(out[o + d] + Flat.round(g * y[d], single), single);
            }
        }
        SwiGluMlp.Context shared = null;
        double[] sharedGates = null;
        if (sharedExpert != null) {
            shared = sharedExpert.forwardTraining(x);                                         // [T, D]
            double[] ysShared = Flat.values(shared.out());
            sharedGates = Flat.values(Dense.linear(x, sharedExpertGate));                    // [T] logits
            for (int t = 0; t < tokens; t++) {
                sharedGates[t] = Flat.round(1.0 / (1.0 + Math.exp(-sharedGates[t])), single);
                for (int d = 0; d < hidden; d++) {
                    int at = t * hidden + d;
                    out[at] = Flat.round(out[at] + Flat.round(sharedGates[t] * ysShared[at], single), single);
                }
            }
        }
        return new Context(xj, noise, logits, probs, selected, gates, plan, ffn, shared, sharedGates,
                Flat.array(out, new long[] {tokens, hidden}, x.dataType()), null, null);
    }

    /**
     * The shared-base forward: logits = xj·Wgᵀ [T, E] (for the load-balancing loss), then the shared-base MoLoRA FFN
     * on xj, which routes with the same gate (softmax, top-K, renormalised as the model does).
     */
    private Context forwardSharedBase(INDArray x, INDArray noise) {
        int tokens = (int) x.size(0);
        int topK = options.topK();
        INDArray xj = noise == null ? x : x.mul(noise);                                       // [T, D]
        INDArray logits = Nd4j.createUninitialized(x.dataType(), new long[] {tokens, numExperts}, 'c'); // [T, E]
        Nd4j.gemm(xj, routerWeight, logits, false, true, 1.0, 0.0);                           // xj·Wgᵀ
        SharedBaseLoraWeights w = new SharedBaseLoraWeights(sharedBase.w1(), sharedBase.w3(), sharedBase.w2(),
                routerWeight, sharedBase.adapters(), topK, options.normalizeTopK());
        SharedBaseLoraExperts.Pass pass = new SharedBaseLoraFactorised(sharedBase.gemm()).forward(w, xj);
        int[] selected = new int[tokens * topK];                                              // [T·K]
        double[] gates = new double[tokens * topK];                                           // [T·K]
        for (int t = 0; t < tokens; t++) {
            for (int k = 0; k < topK; k++) {
                selected[t * topK + k] = pass.routing().expert(t, k);
                gates[t * topK + k] = pass.routing().weight(t, k);
            }
        }
        return new Context(xj, noise, logits, null, selected, gates, pass.routing().plan, null, null, null,
                pass.output(), w, pass);
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
        int tokens = (int) ctx.out.size(0);
        int topK = options.topK();
        checkTokens("dOut", dOut, tokens);
        if (dRouterLogits != null && !Arrays.equals(dRouterLogits.shape(), ctx.logits.shape())) {
            throw new IllegalArgumentException("dRouterLogits must be [T, E] " + Arrays.toString(ctx.logits.shape())
                    + ", got " + Arrays.toString(dRouterLogits.shape()));
        }
        if (sharedBase != null) {
            return backwardSharedBase(ctx, dOut, dRouterLogits);
        }
        RoutingPlan plan = ctx.plan;

        // combine: out[t] += g·ys[row]  →  dys[row] = g·dOut[t], dg = dOut[t]·ys[row]
        double[] dy = Flat.values(dOut);                                                      // [T·D]
        NativeElements ys = rowsOf(ctx.ffn.ys());                                             // [N, D]
        INDArray dysArray = Nd4j.createUninitialized(dOut.dataType(), new long[] {plan.rows(), hidden}, 'c');
        NativeElements dys = rowsOf(dysArray);                                                // [N, D]
        double[] y = new double[hidden];                                                      // one row of ys
        double[] dyRow = new double[hidden];                                                  // one row of dys
        float[] scratch = new float[hidden];
        double[] dGates = new double[tokens * topK];                                          // [T·K]
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            double g = ctx.gates[plan.perm[row]];
            double dg = 0;
            ys.read((long) row * hidden, y, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                dyRow[d] = g * dy[o + d];
                dg += dy[o + d] * y[d];
            }
            dys.write((long) row * hidden, dyRow, hidden, scratch);
            dGates[plan.perm[row]] = dg;
        }

        // experts
        LoraExpertFfn.Gradients ffn = experts.backward(ctx.ffn, dysArray);

        // gather: xs = xj[tokenOfRow]  →  dxj[t] += dxs[row]
        NativeElements dxs = rowsOf(ffn.dxs());                                               // [N, D]
        double[] dxsRow = new double[hidden];                                                 // one row of dxs
        double[] dxj = new double[tokens * hidden];                                           // [T·D]
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            dxs.read((long) row * hidden, dxsRow, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                dxj[o + d] += dxsRow[d];
            }
        }

        // routing: g = p[selected] (/ Σ p[selected]), p = softmax(logits)
        double[] dz = dRouterLogits == null ? new double[tokens * numExperts] : Flat.values(dRouterLogits);
        double[] dp = new double[numExperts];
        for (int t = 0; t < tokens; t++) {
            int p = t * numExperts;
            int s = t * topK;
            Arrays.fill(dp, 0);
            double sumSelected = 0;
            double gDotDg = 0;
            for (int k = 0; k < topK; k++) {
                sumSelected += ctx.probs[p + ctx.selected[s + k]];
                gDotDg += ctx.gates[s + k] * dGates[s + k];
            }
            for (int k = 0; k < topK; k++) {
                dp[ctx.selected[s + k]] = options.normalizeTopK()
                        ? (dGates[s + k] - gDotDg) / sumSelected          // g_k = p_k / Σ_j p_j
                        : dGates[s + k];
            }
            double pDotDp = 0;
            for (int e = 0; e < numExperts; e++) {
                pDotDp += ctx.probs[p + e] * dp[e];
            }
            for (int e = 0; e < numExperts; e++) {
                dz[p + e] += ctx.probs[p + e] * (dp[e] - pDotDp);                            // softmax backward
            }
        }

        // logits = xj·Wgᵀ / τ  →  dWg = dlogitsᵀ·xj, dxj += dlogits·Wg
        INDArray dLogits = Flat.array(dz, ctx.logits.shape(), ctx.logits.dataType());          // [T, E]
        if (options.temperature() != 1.0) {
            dLogits.divi(options.temperature());
        }
        INDArray dRouter = null;
        if (options.trainable()) {
            dRouter = Nd4j.createUninitialized(routerWeight.dataType(), routerWeight.shape(), 'c'); // [E, D]
            Nd4j.gemm(dLogits, ctx.xj, dRouter, true, false, 1.0, 0.0);
        }
        INDArray dx = Flat.array(dxj, ctx.xj.shape(), ctx.xj.dataType());                    // [T, D]
        Nd4j.gemm(dLogits, routerWeight, dx, false, false, 1.0, 1.0);

        // jitter: xj = x ⊙ noise
        if (ctx.noise != null) {
            dx.muli(ctx.noise);
        }

        // shared expert: out += σ(x·Wsgᵀ) ⊙ shared(x)  →  dshared = σ·dOut, dgate logit = σ(1 − σ)·Σ dOut ⊙ shared
        if (ctx.shared != null) {
            double[] ysShared = Flat.values(ctx.shared.out());
            double[] dShared = new double[tokens * hidden];                                   // [T, D]
            double[] dGateLogits = new double[tokens];                                        // [T, 1]
            for (int t = 0; t < tokens; t++) {
                double sig = ctx.sharedGates[t];
                double dot = 0;
                for (int d = 0; d < hidden; d++) {
                    dShared[t * hidden + d] = sig * dy[t * hidden + d];
                    dot += dy[t * hidden + d] * ysShared[t * hidden + d];
                }
                dGateLogits[t] = dot * sig * (1 - sig);
            }
            dx.addi(sharedExpert.backward(ctx.shared, Flat.array(dShared, dOut.shape(), dOut.dataType())));
            Nd4j.gemm(Flat.array(dGateLogits, new long[] {tokens, 1}, dOut.dataType()), sharedExpertGate, dx,
                    false, false, 1.0, 1.0);
        }
        return new Gradients(dx, dRouter, ffn);
    }

    /**
     * The mirror of {@link #forwardSharedBase}: the shared-base backward gives the LoRA gradients and dxj (through the
     * base, the experts and the routing weights) and dWg through the routing weights; a loss on the logits adds
     * dxj += dlogits·Wg and dWg += dlogitsᵀ·xj; the jitter multiplies dxj by the noise.
     */
    private Gradients backwardSharedBase(Context ctx, INDArray dOut, INDArray dRouterLogits) {
        SharedBaseGradients g = new SharedBaseLoraFactorised(sharedBase.gemm()).backward(ctx.baseWeights, ctx.basePass,
                dOut);
        INDArray dx = g.input().dup('c');                                                     // [T, D]
        INDArray dRouter = options.trainable() ? g.gate().dup('c') : null;                    // [E, D]
        if (dRouterLogits != null) {
            Nd4j.gemm(dRouterLogits, routerWeight, dx, false, false, 1.0, 1.0);
            if (dRouter != null) {
                Nd4j.gemm(dRouterLogits, ctx.xj, dRouter, true, false, 1.0, 1.0);
            }
        }
        if (ctx.noise != null) {
            dx.muli(ctx.noise);
        }
        return new Gradients(dx, dRouter, new LoraExpertFfn.Gradients(null, new LoraGradients(g.a1(), g.b1()),
                new LoraGradients(g.a3(), g.b3()), new LoraGradients(g.a2(), g.b2())));
    }

    /** Row-by-row access to an [N, D] array; an empty one (no routed rows) is never read or written. */
    private static NativeElements rowsOf(INDArray a) {
        return a.length() == 0 ? null : NativeElements.of(a);
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
        if (a.rank() != 2 || a.size(0) != tokens || a.size(1) != hidden || a.dataType() != dataType) {
            throw new IllegalArgumentException(name + " must be [" + tokens + ", " + hidden + "] "
                    + dataType + " (T, D), got " + Arrays.toString(a.shape()) + " " + a.dataType());
        }
    }
}
