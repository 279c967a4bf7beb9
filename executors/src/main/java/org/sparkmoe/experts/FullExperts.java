package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.NativeElements;
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
 * loop. The reference is the same class over {@link org.sparkmoe.kernels.LoopGroupedGemm} or
 * {@link org.sparkmoe.kernels.NaiveGroupedGemm}.
 */
public final class FullExperts implements ExpertFfn {
    private final ExpertWeights base;
    private final ExpertRows rows;
    private final GroupedGemm gemm;

    /** The experts as the checkpoint holds them, no LoRA. */
    public FullExperts(ExpertWeights base, GroupedGemm gemm) {
        this(base, null, null, null, gemm);
    }

    /** Any of {@code gate}, {@code up}, {@code down} may be null: that projection stays frozen without LoRA. */
    public FullExperts(ExpertWeights base, LoraExperts gate, LoraExperts up, LoraExperts down, GroupedGemm gemm) {
        this.base = base;
        this.rows = new ExpertRows(base, gate, up, down, gemm);
        this.gemm = gemm;
    }

    /** The same experts with LoRA on the given projections (null: none). */
    public FullExperts withLora(LoraExperts gateLora, LoraExperts upLora, LoraExperts downLora) {
        return new FullExperts(base, gateLora, upLora, downLora, gemm);
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
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        checkTokens("x", x, x.size(0));
        boolean single = dataType() == DataType.FLOAT;
        int hidden = hidden();
        int tokens = (int) x.size(0);
        RoutingPlan plan = routes.plan;
        INDArray xs = Nd4j.pullRows(x, 1, plan.tokenOfRow);                            // [N, D]
        ExpertRows.Context ffn = rows.forward(xs, plan.offsets);                       // ys [N, D]

        // combine: out[t] += g·ys[row]
        NativeElements ys = rowsOf(ffn.ys());                                          // [N, D]
        double[] y = new double[hidden];                                               // one row
        float[] scratch = new float[hidden];
        double[] out = new double[tokens * hidden];                                    // [T, D]
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            double g = routes.weightOfPair(plan.perm[row]);
            ys.read((long) row * hidden, y, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                out[o + d] = Flat.round(out[o + d] + Flat.round(g * y[d], single), single);
            }
        }
        return new FullPass(routes, ffn, Flat.array(out, new long[] {tokens, hidden}, dataType()));
    }

    @Override
    public ExpertGradients backward(Pass pass, INDArray dOut) {
        if (!(pass instanceof FullPass p)) {
            throw new IllegalArgumentException("full experts' backward needs a pass from their forward, got "
                    + (pass == null ? "null" : pass.getClass().getSimpleName()));
        }
        int hidden = hidden();
        int tokens = (int) p.out().size(0);
        checkTokens("dOut", dOut, tokens);
        RoutingPlan plan = p.routes().plan;

        // combine: out[t] += g·ys[row]  →  dys[row] = g·dOut[t], dg = dOut[t]·ys[row]
        double[] dy = Flat.values(dOut);                                               // [T·D]
        NativeElements ys = rowsOf(p.ffn().ys());                                      // [N, D]
        INDArray dysArray = Nd4j.createUninitialized(dataType(), new long[] {plan.rows(), hidden}, 'c');
        NativeElements dys = rowsOf(dysArray);                                         // [N, D]
        double[] y = new double[hidden];                                               // one row of ys
        double[] dyRow = new double[hidden];                                           // one row of dys
        float[] scratch = new float[hidden];
        double[] dWeights = new double[plan.rows()];                                   // [T·K] pair order
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            double g = p.routes().weightOfPair(plan.perm[row]);
            double dg = 0;
            ys.read((long) row * hidden, y, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                dyRow[d] = g * dy[o + d];
                dg += dy[o + d] * y[d];
            }
            dys.write((long) row * hidden, dyRow, hidden, scratch);
            dWeights[plan.perm[row]] = dg;
        }

        // the experts, in reverse
        ExpertRows.Gradients ffn = rows.backward(p.ffn(), dysArray);

        // gather: xs = x[tokenOfRow]  →  dx[t] += dxs[row]
        NativeElements dxs = rowsOf(ffn.dxs());                                        // [N, D]
        double[] dxsRow = new double[hidden];                                          // one row of dxs
        double[] dx = new double[tokens * hidden];                                     // [T·D]
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            dxs.read((long) row * hidden, dxsRow, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                dx[o + d] += dxsRow[d];
            }
        }
        return new ExpertGradients(Flat.array(dx, new long[] {tokens, hidden}, dataType()), dWeights, ffn.gate(),
                ffn.up(), ffn.down());
    }

    /** Row-by-row access to an [N, D] array; an empty one (no routed rows) is never read or written. */
    private static NativeElements rowsOf(INDArray a) {
        return a.length() == 0 ? null : NativeElements.of(a);
    }

    private void checkTokens(String name, INDArray a, long tokens) {
        if (a.rank() != 2 || a.size(0) != tokens || a.size(1) != hidden() || a.dataType() != dataType()) {
            throw new IllegalArgumentException(name + " must be [" + tokens + ", " + hidden() + "] "
                    + dataType() + " (T, D), got " + Arrays.toString(a.shape()) + " " + a.dataType());
        }
    }
}
