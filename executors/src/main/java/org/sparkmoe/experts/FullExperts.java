package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.NativeBuffers;
import org.sparkmoe.kernels.VectorRows;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * The E gated experts of one MoE layer with frozen base weights (and gpt-oss's frozen biases) and per-expert LoRA on
 * any of the three projections (none: the model as it is), over the rows of a routing plan:
 * <pre>
 *   xs  = x[tokenOfRow]                          [N, D]   N = T·K, plan order (sorted by expert)
 *   h1  = xs·W1ᵀ + s1·(xs·A1ᵀ)·B1ᵀ (+ b1)       [N, I]   (gate / w1)
 *   h3  = xs·W3ᵀ + s3·(xs·A3ᵀ)·B3ᵀ (+ b3)       [N, I]   (up / w3)
 *   act = f(h1, h3)                             [N, I]   silu(h1) ⊙ h3, or gpt-oss's clamped gate
 *   ys  = act·W2ᵀ + s2·(act·A2ᵀ)·B2ᵀ (+ b2)     [N, D]   (down / w2; the bias inside the routing weight)
 *   out[t] += g · ys[row]                       [T, D]   rows in plan order (the order transformers' index_add_ uses)
 * </pre>
 * The expert FFNs run over the plan's rows ({@link ExpertRows}: every product a grouped GEMM); backward runs the same
 * steps in reverse.
 * The combine runs in float64 rounded to float32 at every operation in FLOAT, so it is bit-identical to a float32
 * loop; each token adds its rows in plan order whatever the split of tokens over the workers ({@link VectorRows}:
 * the same bits as a scalar loop). The reference is the same class over {@link org.sparkmoe.kernels.LoopGroupedGemm}
 * or {@link org.sparkmoe.kernels.NaiveGroupedGemm}. With a {@link DeviceExperts} (a GPU layer holding the weights in
 * bf16) the FLOAT forward and its backward run there instead, to bf16 precision.
 */
public final class FullExperts implements ExpertFfn {
    private final ExpertWeights base;
    private final LoraExperts gateLora;    // null: none
    private final LoraExperts upLora;
    private final LoraExperts downLora;
    private final ExpertRows rows;
    private final GroupedGemm gemm;
    private final DeviceExperts device;    // runs FLOAT forwards and their backwards when set (a GPU layer)

    /** The experts as the checkpoint holds them, no LoRA. */
    public FullExperts(ExpertWeights base, GroupedGemm gemm) {
        this(base, null, null, null, gemm, null);
    }

    /**
     * The experts as the checkpoint holds them, no LoRA; FLOAT forwards and their backwards run on {@code device}
     * (which holds these weights), everything else ({@link #routedRows(INDArray, Routes)}, {@link #expertOutputs})
     * over {@code gemm}.
     */
    public FullExperts(ExpertWeights base, GroupedGemm gemm, DeviceExperts device) {
        this(base, null, null, null, gemm, device);
    }

    /** Any of {@code gate}, {@code up}, {@code down} may be null: that projection stays frozen without LoRA. */
    public FullExperts(ExpertWeights base, LoraExperts gate, LoraExperts up, LoraExperts down, GroupedGemm gemm) {
        this(base, gate, up, down, gemm, null);
    }

    private FullExperts(ExpertWeights base, LoraExperts gate, LoraExperts up, LoraExperts down, GroupedGemm gemm,
                        DeviceExperts device) {
        this.base = base;
        this.gateLora = gate;
        this.upLora = up;
        this.downLora = down;
        this.rows = new ExpertRows(base, gate, up, down, gemm);
        this.gemm = gemm;
        this.device = device;
    }

    /** The same experts (on the same device) with LoRA on the given projections (null: none). */
    public FullExperts withLora(LoraExperts gateLora, LoraExperts upLora, LoraExperts downLora) {
        return new FullExperts(base, gateLora, upLora, downLora, gemm, device);
    }

    /** The frozen stacked weights (read-only use). */
    public ExpertWeights weights() {
        return base;
    }

    @Override
    public int experts() {
        return rows.experts();
    }

    @Override
    public int hidden() {
        return rows.hidden();
    }

    @Override
    public DataType dataType() {
        return rows.dataType();
    }

    /** The forward result and what {@link #backward} needs; immutable once built. */
    private record FullPass(Routes routes, ExpertRows.Context ffn, INDArray out) implements Pass {
        @Override
        public void release() {
            ffn.release();
        }
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        checkTokens("x", x, x.size(0));
        if (device != null && dataType() == DataType.FLOAT) {
            return device.forward(x, routes, gateLora, upLora, downLora);
        }
        int tokens = (int) x.size(0);
        RoutingPlan plan = routes.plan;
        INDArray xs = Nd4j.pullRows(x, 1, plan.tokenOfRow);                            // [N, D]
        ExpertRows.Context ffn = rows.forward(xs, plan.offsets);                       // ys [N, D]
        INDArray out = combine(ffn.ys(), routes, tokens);                              // [T, D]
        return new FullPass(routes, ffn, out);
    }

    /**
     * The combine: {@code out[t] = Σ g·ys[row]} over token t's rows in plan order (ascending expert), each addition
     * rounded to float32 in FLOAT. The one summation order of the routed experts: {@link #forward} runs it over its
     * own rows, and a pass that computes the rows in groups of experts ({@link #expertOutputs(INDArray, RoutingPlan,
     * int, int)}, concatenated in group order: the plan's rows) runs it over theirs, with the same bits.
     *
     * @param ys     [N, D] every plan row's expert output, in plan order
     * @param routes the routing decision whose plan the rows follow
     * @param tokens T
     * @return [T, D]
     */
    public INDArray combine(INDArray ys, Routes routes, int tokens) {
        return RowCombine.combine(ys, routes, tokens, hidden(), dataType(), rows.workers());
    }

    /**
     * Every routed row of one forward, in plan order (expert e owns rows {@code plan.offsets[e]..offsets[e+1]-1},
     * N = T·K): what calibration's statistics read instead of running the experts again.
     *
     * @param routes the routing decision
     * @param xs     [N, D] each row's input, {@code x[plan.tokenOfRow[i]]}
     * @param act    [N, I] the gated activation w2 reads (with LoRA on w1/w3 and gpt-oss's biases, as computed)
     * @param ys     [N, D] the expert's output before its routing weight (gpt-oss: with the down bias)
     */
    public record RoutedRows(Routes routes, INDArray xs, INDArray act, INDArray ys) {
        /** Frees the rows' native buffers now (a workspace's stay until it closes); nothing may read them after. */
        public void release() {
            NativeBuffers.free(xs, act, ys);
        }
    }

    /**
     * The routed rows {@link #forward} computed in {@code pass} (valid as long as the pass's arrays are); null for a
     * pass on a device layer, which keeps its rows on the device ({@link #routedRows(INDArray, Routes)} computes them).
     */
    public RoutedRows routedRows(Pass pass) {
        if (pass instanceof DeviceExperts.Pass) {
            return null;
        }
        if (!(pass instanceof FullPass p)) {
            throw new IllegalArgumentException("full experts' routed rows need a pass from their forward, got "
                    + (pass == null ? "null" : pass.getClass().getSimpleName()));
        }
        return new RoutedRows(p.routes(), p.ffn().xs(), p.ffn().act(), p.ffn().ys());
    }

    /**
     * The routed rows of x [T, D] under {@code routes}, computed as {@link #forward} computes them (no combine; what
     * only a backward reads is freed at once).
     */
    public RoutedRows routedRows(INDArray x, Routes routes) {
        checkTokens("x", x, x.size(0));
        INDArray xs = Nd4j.pullRows(x, 1, routes.plan.tokenOfRow);                     // [N, D]
        ExpertRows.Context ffn = rows.forward(xs, routes.plan.offsets);
        ffn.releaseBackwardInputs();
        return new RoutedRows(routes, xs, ffn.act(), ffn.ys());
    }

    /**
     * Expert e's gated activation for every token of x [T, D], whatever the router chose: act [T, I], as a forward
     * computes it for the rows routed to e (its LoRA on w1/w3 and its biases included). The caller frees it.
     */
    public INDArray everyTokenActivation(INDArray x, int expert) {
        checkTokens("x", x, x.size(0));
        if (expert < 0 || expert >= experts()) {
            throw new IllegalArgumentException("an expert must lie in [0, " + experts() + "), got " + expert);
        }
        int[] offsets = new int[experts() + 1];                                        // [E+1]: expert owns all T rows
        for (int e = expert + 1; e <= experts(); e++) {
            offsets[e] = (int) x.size(0);
        }
        return rows.gated(x, offsets);                                                 // [T, I]
    }

    /**
     * The routed rows' expert outputs ys [N_g, D] that experts {@code from..to-1} own, alone: plan rows
     * {@code offsets[from]..offsets[to]-1}, bit for bit those rows of {@link #forward}'s, reading no other expert's
     * weights. A layer-sequential pass runs a layer's experts in such groups as separate tasks.
     *
     * @param x    [T, D]
     * @param plan the routing decision's plan
     */
    public INDArray expertOutputs(INDArray x, RoutingPlan plan, int from, int to) {
        checkTokens("x", x, x.size(0));
        if (from < 0 || from > to || to > experts()) {
            throw new IllegalArgumentException("an expert range must lie in [0, " + experts() + "], got [" + from
                    + ", " + to + ")");
        }
        int lo = plan.offsets[from];
        int hi = plan.offsets[to];
        if (lo == hi) {
            return Nd4j.create(dataType(), 0, hidden());                                // no routed rows
        }
        int[] offsets = new int[experts() + 1];                                        // [E+1], only from..to-1 own rows
        for (int e = 0; e <= experts(); e++) {
            offsets[e] = Math.min(hi, Math.max(lo, plan.offsets[e])) - lo;
        }
        INDArray xs = Nd4j.pullRows(x, 1, Arrays.copyOfRange(plan.tokenOfRow, lo, hi)); // [N_g, D]
        return rows.forward(xs, offsets).ys();                                         // [N_g, D]
    }

    @Override
    public ExpertGradients backward(Pass pass, INDArray dOut) {
        if (pass instanceof DeviceExperts.Pass dp && device != null) {
            checkTokens("dOut", dOut, dp.out().size(0));
            return device.backward(dp, dOut);
        }
        if (!(pass instanceof FullPass p)) {
            throw new IllegalArgumentException("full experts' backward needs a pass from their forward, got "
                    + (pass == null ? "null" : pass.getClass().getSimpleName()));
        }
        int tokens = (int) p.out().size(0);
        checkTokens("dOut", dOut, tokens);
        RoutingPlan plan = p.routes().plan;

        // combine: out[t] += g·ys[row]  →  dys[row] = g·dOut[t], dg = dOut[t]·ys[row]
        double[] dWeights = new double[plan.rows()];                                   // [T·K] pair order
        INDArray dysArray = RowCombine.backward(dOut, p.ffn().ys(), p.routes(), dWeights, rows.workers()); // [N, D]

        // the experts, in reverse
        ExpertRows.Gradients ffn = rows.backward(p.ffn(), dysArray);

        // gather: xs = x[tokenOfRow]  →  dx[t] = Σ dxs[row] over t's rows in plan order, rounded once
        INDArray dx = RowCombine.sumByToken(ffn.dxs(), plan, tokens, rows.workers());  // [T, D]
        NativeBuffers.free(dysArray, ffn.dxs());
        p.release();                                                                   // one backward per pass
        return new ExpertGradients(dx, dWeights, ffn.gate(), ffn.up(), ffn.down());
    }

    private void checkTokens(String name, INDArray a, long tokens) {
        if (a.rank() != 2 || a.size(0) != tokens || a.size(1) != hidden() || a.dataType() != dataType()) {
            throw new IllegalArgumentException(name + " must be [" + tokens + ", " + hidden() + "] "
                    + dataType() + " (T, D), got " + Arrays.toString(a.shape()) + " " + a.dataType());
        }
    }
}
