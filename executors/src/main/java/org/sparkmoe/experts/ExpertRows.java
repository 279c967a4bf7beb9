package org.sparkmoe.experts;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.NativeBuffers;
import org.sparkmoe.kernels.Workers;

/**
 * The expert FFNs of {@link FullExperts} over rows already sorted by expert (a routing plan): E gated experts with
 * frozen base weights (and, for gpt-oss, frozen biases) and per-expert LoRA on any of the three projections:
 * <pre>
 *   h1  = xs·W1ᵀ + s1·(xs·A1ᵀ)·B1ᵀ (+ b1)       [N, I]   (gate / w1)
 *   h3  = xs·W3ᵀ + s3·(xs·A3ᵀ)·B3ᵀ (+ b3)       [N, I]   (up / w3)
 *   act = f(h1, h3)                             [N, I]   silu(h1) ⊙ h3, or gpt-oss's clamped gate
 *   ys  = act·W2ᵀ + s2·(act·A2ᵀ)·B2ᵀ (+ b2)     [N, D]   (down / w2)
 * </pre>
 * Every product is a grouped GEMM, the SwiGLU runs on the GEMM's threads; backward runs the same steps in reverse. FLOAT or DOUBLE, all arrays of one
 * type. Stateless per call: what backward needs travels in the {@link Context}, so one instance serves
 * concurrent tasks.
 */
final class ExpertRows {
    private final AdaptedProjection gate;  // w1: [E, I, D]
    private final AdaptedProjection up;    // w3: [E, I, D]
    private final AdaptedProjection down;  // w2: [E, D, I]
    private final GatedActivation activation;
    private final int experts;
    private final int hidden;
    private final DataType dataType;
    private final Workers workers;         // the GEMM's threads, reused for the element-wise SwiGLU

    /** Any of {@code gate}, {@code up}, {@code down} may be null: that projection stays frozen without LoRA. */
    ExpertRows(ExpertWeights base, LoraExperts gate, LoraExperts up, LoraExperts down, GroupedGemm gemm) {
        this.gate = new AdaptedProjection("w1 (gate_proj)", base.w1(), base.b1(), gate, gemm);
        this.up = new AdaptedProjection("w3 (up_proj)", base.w3(), base.b3(), up, gemm);
        this.down = new AdaptedProjection("w2 (down_proj)", base.w2(), base.b2(), down, gemm);
        this.activation = base.activation();
        this.experts = base.experts();
        this.hidden = base.hidden();
        this.dataType = base.computeType();
        this.workers = gemm.workers();
    }

    public int experts() {
        return experts;
    }

    /** D. */
    public int hidden() {
        return hidden;
    }

    public DataType dataType() {
        return dataType;
    }

    /** The GEMM's threads, which the element-wise work around the experts runs on too. */
    Workers workers() {
        return workers;
    }

    /** The forward result and what {@link #backward} needs; immutable once built. */
    static final class Context {
        private final INDArray xs;                   // [N, D]
        private final int[] offsets;                 // [E+1]
        private final AdaptedProjection.Forward h1;  // [N, I]
        private final AdaptedProjection.Forward h3;  // [N, I]
        private final INDArray act;                  // [N, I]
        private final AdaptedProjection.Forward ys;  // [N, D]

        private Context(INDArray xs, int[] offsets, AdaptedProjection.Forward h1, AdaptedProjection.Forward h3,
                        INDArray act, AdaptedProjection.Forward ys) {
            this.xs = xs;
            this.offsets = offsets;
            this.h1 = h1;
            this.h3 = h3;
            this.act = act;
            this.ys = ys;
        }

        /** @return ys [N, D], rows in plan order */
        INDArray ys() {
            return ys.h();
        }

        /** @return xs [N, D], the rows' inputs in plan order */
        INDArray xs() {
            return xs;
        }

        /** @return act [N, I], the gated activation w2 reads, rows in plan order */
        INDArray act() {
            return act;
        }

        /** Frees what only a backward reads (both gate projections and the LoRA inputs); xs, act and ys stay. */
        void releaseBackwardInputs() {
            NativeBuffers.free(h1.h(), h1.shrunk(), h3.h(), h3.shrunk(), ys.shrunk());
        }

        /**
         * Frees the native buffers of this pass (xs, both gate projections, act, ys and the LoRA inputs) now, not
         * when the garbage collector finds them; nothing may read them after.
         */
        void release() {
            NativeBuffers.free(xs, h1.h(), h1.shrunk(), h3.h(), h3.shrunk(), act, ys.h(), ys.shrunk());
        }
    }

    /**
     * Gradients of one backward pass; the LoRA gradients of a projection without LoRA are null.
     *
     * @param dxs [N, D]
     */
    record Gradients(INDArray dxs, LoraGradients gate, LoraGradients up, LoraGradients down) {
    }

    /**
     * @param xs      [N, D] rows in plan order (expert e owns rows offsets[e]..offsets[e+1]-1)
     * @param offsets [E+1]
     */
    Context forward(INDArray xs, int[] offsets) {
        checkRows("xs", xs, offsets);
        int[] ranges = offsets.clone();
        AdaptedProjection.Forward h1 = gate.forward(xs, ranges);          // [N, I]
        AdaptedProjection.Forward h3 = up.forward(xs, ranges);            // [N, I]
        INDArray act = Activations.gated(activation, h1.h(), h3.h(), workers);    // [N, I]
        AdaptedProjection.Forward ys = down.forward(act, ranges);         // [N, D]
        return new Context(xs, ranges, h1, h3, act, ys);
    }

    /**
     * The gated activation alone, act = f(h1, h3) [N, I] (LoRA and biases as in {@link #forward}, no down
     * projection); the gate projections are freed here.
     *
     * @param xs      [N, D] rows in plan order
     * @param offsets [E+1]
     */
    INDArray gated(INDArray xs, int[] offsets) {
        checkRows("xs", xs, offsets);
        AdaptedProjection.Forward h1 = gate.forward(xs, offsets);                  // [N, I]
        AdaptedProjection.Forward h3 = up.forward(xs, offsets);                    // [N, I]
        INDArray act = Activations.gated(activation, h1.h(), h3.h(), workers);     // [N, I]
        NativeBuffers.free(h1.h(), h1.shrunk(), h3.h(), h3.shrunk());
        return act;
    }

    /** @param dys [N, D] gradient of the loss with respect to {@code ctx.ys()} */
    Gradients backward(Context ctx, INDArray dys) {
        checkRows("dys", dys, ctx.offsets);
        INDArray dAct = Nd4j.createUninitialized(dataType, ctx.act.shape(), 'c');          // [N, I]
        LoraGradients dDown = down.backward(ctx.act, ctx.ys, dys, ctx.offsets, dAct, false);
        INDArray[] dh = Activations.gatedBackward(activation, ctx.h1.h(), ctx.h3.h(), dAct, workers); // [N, I] ×2
        INDArray dxs = Nd4j.createUninitialized(dataType, ctx.xs.shape(), 'c');            // [N, D]
        LoraGradients dUp = up.backward(ctx.xs, ctx.h3, dh[1], ctx.offsets, dxs, false);
        LoraGradients dGate = gate.backward(ctx.xs, ctx.h1, dh[0], ctx.offsets, dxs, true);
        NativeBuffers.free(dAct, dh[0], dh[1]);
        return new Gradients(dxs, dGate, dUp, dDown);
    }

    private void checkRows(String name, INDArray rows, int[] offsets) {
        if (offsets == null || offsets.length != experts + 1) {
            throw new IllegalArgumentException("offsets must have E+1 = " + (experts + 1) + " entries, got "
                    + (offsets == null ? "null" : Arrays.toString(offsets)));
        }
        if (rows.rank() != 2 || rows.size(1) != hidden || rows.size(0) != offsets[experts]
                || rows.dataType() != dataType) {
            throw new IllegalArgumentException(name + " must be [" + offsets[experts] + ", " + hidden + "] "
                    + dataType + " (rows to offsets[E], D), got " + Arrays.toString(rows.shape()) + " "
                    + rows.dataType());
        }
    }
}
