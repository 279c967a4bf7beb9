package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.RoutingPlan;
import org.sparkmoe.routing.Routes;

/**
 * The E SwiGLU experts of one MoE layer with frozen base weights and per-expert LoRA on any of the three
 * projections (none: the model as it is), over the rows of a routing plan:
 * <pre>
 *   xs  = x[tokenOfRow]                    [N, D]   N = T·K, plan order (sorted by expert)
 *   h1  = xs·W1ᵀ + s1·(xs·A1ᵀ)·B1ᵀ       [N, I]   (gate / w1)
 *   h3  = xs·W3ᵀ + s3·(xs·A3ᵀ)·B3ᵀ       [N, I]   (up / w3)
 *   act = silu(h1) ⊙ h3                  [N, I]
 *   ys  = act·W2ᵀ + s2·(act·A2ᵀ)·B2ᵀ     [N, D]   (down / w2)
 *   out[t] += g · ys[row]                [T, D]   rows in plan order (the order transformers' index_add_ uses)
 * </pre>
 * Every product is a grouped GEMM; the SwiGLU runs on the GEMM's threads; backward runs the same steps in reverse.
 * The combine runs in float64 rounded to float32 at every operation in FLOAT, so it is bit-identical to a float32
 * loop. The reference is the same class over {@link org.sparkmoe.kernels.LoopGroupedGemm} or
 * {@link org.sparkmoe.kernels.NaiveGroupedGemm}.
 */
public final class FullExperts implements ExpertFfn {
    private final ExpertWeights base;
    private final AdaptedProjection gate;  // w1: [E, I, D]
    private final AdaptedProjection up;    // w3: [E, I, D]
    private final AdaptedProjection down;  // w2: [E, D, I]
    private final GroupedGemm gemm;
    private final int hidden;
    private final DataType dataType;
    private final Workers workers;         // the GEMM's threads, reused for the element-wise SwiGLU

    /** The experts as the checkpoint holds them, no LoRA. */
    public FullExperts(ExpertWeights base, GroupedGemm gemm) {
        this(base, null, null, null, gemm);
    }

    /** Any of {@code gate}, {@code up}, {@code down} may be null: that projection stays frozen without LoRA. */
    public FullExperts(ExpertWeights base, LoraExperts gate, LoraExperts up, LoraExperts down, GroupedGemm gemm) {
        if (base.w1().dataType() != base.w3().dataType() || base.w1().dataType() != base.w2().dataType()
                || (base.w1().dataType() != DataType.FLOAT && base.w1().dataType() != DataType.DOUBLE)) {
            throw new IllegalArgumentException("expert weights must all be FLOAT or all DOUBLE, got w1 "
                    + base.w1().dataType() + ", w3 " + base.w3().dataType() + ", w2 " + base.w2().dataType());
        }
        this.base = base;
        this.gate = new AdaptedProjection("w1 (gate_proj)", base.w1(), gate, gemm);
        this.up = new AdaptedProjection("w3 (up_proj)", base.w3(), up, gemm);
        this.down = new AdaptedProjection("w2 (down_proj)", base.w2(), down, gemm);
        this.gemm = gemm;
        this.hidden = (int) base.w1().size(2);
        this.dataType = base.w1().dataType();
        this.workers = gemm.workers();
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
        return base.experts();
    }

    @Override
    public int hidden() {
        return hidden;
    }

    @Override
    public DataType dataType() {
        return dataType;
    }

    /** The forward result and what {@link #backward} needs; immutable once built. */
    private static final class FullPass implements Pass {
        private final Routes routes;
        private final INDArray xs;                   // [N, D]
        private final int[] offsets;                 // [E+1]
        private final AdaptedProjection.Forward h1;  // [N, I]
        private final AdaptedProjection.Forward h3;  // [N, I]
        private final INDArray act;                  // [N, I]
        private final AdaptedProjection.Forward ys;  // [N, D]
        private final INDArray out;                  // [T, D]

        private FullPass(Routes routes, INDArray xs, int[] offsets, AdaptedProjection.Forward h1,
                         AdaptedProjection.Forward h3, INDArray act, AdaptedProjection.Forward ys, INDArray out) {
            this.routes = routes;
            this.xs = xs;
            this.offsets = offsets;
            this.h1 = h1;
            this.h3 = h3;
            this.act = act;
            this.ys = ys;
            this.out = out;
        }

        @Override
        public INDArray out() {
            return out;
        }
    }

    @Override
    public Pass forward(INDArray x, Routes routes) {
        checkTokens("x", x, x.size(0));
        boolean single = dataType == DataType.FLOAT;
        int tokens = (int) x.size(0);
        RoutingPlan plan = routes.plan;
        checkPlan(plan);
        INDArray xs = Nd4j.pullRows(x, 1, plan.tokenOfRow);                            // [N, D]
        int[] ranges = plan.offsets.clone();
        AdaptedProjection.Forward h1 = gate.forward(xs, ranges);                       // [N, I]
        AdaptedProjection.Forward h3 = up.forward(xs, ranges);                         // [N, I]
        INDArray act = Activations.swiGlu(h1.h(), h3.h(), workers);                   // [N, I]
        AdaptedProjection.Forward ys = down.forward(act, ranges);                      // [N, D]

        NativeElements rows = rowsOf(ys.h());                                          // [N, D]
        double[] y = new double[hidden];                                               // one row
        float[] scratch = new float[hidden];
        double[] out = new double[tokens * hidden];                                    // [T, D]
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            double g = routes.weightOfPair(plan.perm[row]);
            rows.read((long) row * hidden, y, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                out[o + d] = Flat.round(out[o + d] + Flat.round(g * y[d], single), single);
            }
        }
        return new FullPass(routes, xs, ranges, h1, h3, act, ys,
                Flat.array(out, new long[] {tokens, hidden}, dataType));
    }

    @Override
    public ExpertGradients backward(Pass pass, INDArray dOut) {
        if (!(pass instanceof FullPass p)) {
            throw new IllegalArgumentException("full experts' backward needs a pass from their forward, got "
                    + (pass == null ? "null" : pass.getClass().getSimpleName()));
        }
        int tokens = (int) p.out.size(0);
        checkTokens("dOut", dOut, tokens);
        RoutingPlan plan = p.routes.plan;

        // combine: out[t] += g·ys[row]  →  dys[row] = g·dOut[t], dg = dOut[t]·ys[row]
        double[] dy = Flat.values(dOut);                                               // [T·D]
        NativeElements ys = rowsOf(p.ys.h());                                          // [N, D]
        INDArray dysArray = Nd4j.createUninitialized(dataType, new long[] {plan.rows(), hidden}, 'c');
        NativeElements dys = rowsOf(dysArray);                                         // [N, D]
        double[] y = new double[hidden];                                               // one row of ys
        double[] dyRow = new double[hidden];                                           // one row of dys
        float[] scratch = new float[hidden];
        double[] dWeights = new double[plan.rows()];                                   // [T·K] pair order
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            double g = p.routes.weightOfPair(plan.perm[row]);
            double dg = 0;
            ys.read((long) row * hidden, y, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                dyRow[d] = g * dy[o + d];
                dg += dy[o + d] * y[d];
            }
            dys.write((long) row * hidden, dyRow, hidden, scratch);
            dWeights[plan.perm[row]] = dg;
        }

        // experts, in reverse
        INDArray dAct = Nd4j.createUninitialized(dataType, p.act.shape(), 'c');         // [N, I]
        LoraGradients dDown = down.backward(p.act, p.ys, dysArray, p.offsets, dAct, false);
        INDArray[] dh = Activations.swiGluBackward(p.h1.h(), p.h3.h(), dAct, workers);  // dh1, dh3 [N, I]
        INDArray dxsArray = Nd4j.createUninitialized(dataType, p.xs.shape(), 'c');      // [N, D]
        LoraGradients dUp = up.backward(p.xs, p.h3, dh[1], p.offsets, dxsArray, false);
        LoraGradients dGate = gate.backward(p.xs, p.h1, dh[0], p.offsets, dxsArray, true);

        // gather: xs = x[tokenOfRow]  →  dx[t] += dxs[row]
        NativeElements dxs = rowsOf(dxsArray);                                         // [N, D]
        double[] dxsRow = new double[hidden];                                          // one row of dxs
        double[] dx = new double[tokens * hidden];                                     // [T·D]
        for (int row = 0; row < plan.rows(); row++) {
            int o = plan.tokenOfRow[row] * hidden;
            dxs.read((long) row * hidden, dxsRow, hidden, scratch);
            for (int d = 0; d < hidden; d++) {
                dx[o + d] += dxsRow[d];
            }
        }
        return new ExpertGradients(Flat.array(dx, new long[] {tokens, hidden}, dataType), dWeights, dGate, dUp,
                dDown);
    }

    /** Row-by-row access to an [N, D] array; an empty one (no routed rows) is never read or written. */
    private static NativeElements rowsOf(INDArray a) {
        return a.length() == 0 ? null : NativeElements.of(a);
    }

    private void checkPlan(RoutingPlan plan) {
        if (plan.offsets.length != experts() + 1) {
            throw new IllegalArgumentException("the routing is over " + (plan.offsets.length - 1)
                    + " experts, these experts are " + experts());
        }
    }

    private void checkTokens(String name, INDArray a, long tokens) {
        if (a.rank() != 2 || a.size(0) != tokens || a.size(1) != hidden || a.dataType() != dataType) {
            throw new IllegalArgumentException(name + " must be [" + tokens + ", " + hidden + "] "
                    + dataType + " (T, D), got " + Arrays.toString(a.shape()) + " " + a.dataType());
        }
    }
}
