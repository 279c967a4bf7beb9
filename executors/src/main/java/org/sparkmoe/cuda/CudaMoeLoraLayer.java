package org.sparkmoe.cuda;

/**
 * The MoE-LoRA SwiGLU experts of one layer on the GPU (see {@code moe_lora.cu}): frozen W1, W3 [E, I, D] and W2
 * [E, D, I] resident on the device for the layer's life, LoRA (rank R, one scale s = α/R) on all three:
 * <pre>
 *   xs = x[tokenOfRow]; h = xs·Wᵀ + s·(xs·Aᵀ)·Bᵀ per projection; ys = down(silu(h1) ⊙ h3)
 *   out[t] = Σ_k w · ys[row of (t, k)]                                              [T, D]
 * </pre>
 * {@link #backward} gives dx, the fp32 LoRA gradients and the routing weights' gradient. BF16 runs on the
 * tensor cores (fp32 accumulation); F32 on the SIMT kernel, for tests. Activations and outputs are in the
 * layer's precision; LoRA gradients always fp32. Not thread-safe: the forward keeps what backward needs.
 */
public final class CudaMoeLoraLayer implements AutoCloseable {
    public enum Precision { F32, BF16 }

    /** The gradient outputs of {@link #backward}, fp32 device buffers (dGates [N], in plan row order). */
    public record Gradients(DeviceBuffer dA1, DeviceBuffer dB1, DeviceBuffer dA3, DeviceBuffer dB3, DeviceBuffer dA2,
                            DeviceBuffer dB2, DeviceBuffer dGates) {
        public static Gradients allocate(int experts, int hidden, int intermediate, int rank, int rows) {
            long e = experts;
            return new Gradients(DeviceBuffer.allocate(4 * e * rank * hidden),
                    DeviceBuffer.allocate(4 * e * intermediate * rank), DeviceBuffer.allocate(4 * e * rank * hidden),
                    DeviceBuffer.allocate(4 * e * intermediate * rank), DeviceBuffer.allocate(4 * e * rank * intermediate),
                    DeviceBuffer.allocate(4 * e * hidden * rank), DeviceBuffer.allocate(4L * Math.max(rows, 1)));
        }

        long[] pointers() {
            return new long[] {dA1.pointer(), dB1.pointer(), dA3.pointer(), dB3.pointer(), dA2.pointer(),
                    dB2.pointer(), dGates.pointer()};
        }
    }

    private long handle;
    public final Precision precision;
    public final int experts;
    public final int hidden;
    public final int intermediate;
    public final int rank;

    public CudaMoeLoraLayer(Precision precision, int experts, int hidden, int intermediate, int rank, float scale) {
        CudaLibrary.load();
        if (precision == Precision.BF16 && (hidden % 8 != 0 || intermediate % 8 != 0 || rank % 8 != 0)) {
            throw new IllegalArgumentException("the bf16 kernels need D, I and R multiples of 8, got D=" + hidden
                    + ", I=" + intermediate + ", R=" + rank);
        }
        if (intermediate % 8 != 0) {
            throw new IllegalArgumentException("the CUDA layer needs I a multiple of 8, got " + intermediate);
        }
        this.handle = CudaNative.layerCreate(precision == Precision.BF16 ? CudaNative.BF16 : CudaNative.F32, experts,
                hidden, intermediate, rank, scale);
        this.precision = precision;
        this.experts = experts;
        this.hidden = hidden;
        this.intermediate = intermediate;
        this.rank = rank;
    }

    /**
     * Device bytes a layer holds for its life ({@code smk_layer_create}): the weights packed, W1|W3 and W2
     * (3·E·I·D elements), the LoRA factors (E·R·(3D + 5I) elements) and the fp32 LoRA gradient buffers
     * (E·R·(2D + 4I) floats).
     */
    public static long layerBytes(Precision p, int experts, int hidden, int intermediate, int rank) {
        long e = experts;
        long element = p == Precision.BF16 ? 2 : 4;
        return element * (3 * e * intermediate * hidden + e * rank * (3L * hidden + 5L * intermediate))
                + Float.BYTES * e * rank * (2L * hidden + 4L * intermediate);
    }

    /**
     * Device bytes of a layer's pass buffers for {@code rows} routed rows (T·K), which it grows to its largest pass
     * and keeps: (4D + 5I + 6R) elements per row.
     */
    public static long passBytes(Precision p, int hidden, int intermediate, int rank, long rows) {
        long element = p == Precision.BF16 ? 2 : 4;
        return element * Math.max(rows, 1) * (4L * hidden + 5L * intermediate + 6L * rank);
    }

    /** Bytes per activation / weight element. */
    public int elementBytes() {
        return precision == Precision.BF16 ? 2 : 4;
    }

    /** Copies (and packs) the frozen weights w1, w3 [E, I, D], w2 [E, D, I] into the layer. */
    public void setBase(DeviceBuffer w1, DeviceBuffer w3, DeviceBuffer w2) {
        CudaNative.layerSetBase(handle(), w1.pointer(), w3.pointer(), w2.pointer());
    }

    /** Copies the LoRA factors a1, a3 [E, R, D], b1, b3 [E, I, R], a2 [E, R, I], b2 [E, D, R] into the layer. */
    public void setLora(DeviceBuffer a1, DeviceBuffer b1, DeviceBuffer a3, DeviceBuffer b3, DeviceBuffer a2,
                        DeviceBuffer b2) {
        CudaNative.layerSetLora(handle(), a1.pointer(), b1.pointer(), a3.pointer(), b3.pointer(), a2.pointer(),
                b2.pointer());
    }

    /** x [T, D] → out [T, D]. */
    public void forward(DevicePlan plan, DeviceBuffer x, DeviceBuffer out) {
        CudaNative.layerForward(handle(), plan.tokens, plan.topK, plan.rows, plan.offsets.pointer(),
                plan.tokenOfRow.pointer(), plan.weightOfRow.pointer(), plan.rowOfPair.pointer(), x.pointer(),
                out.pointer());
    }

    /** After {@link #forward}: dOut [T, D] → dx [T, D] and the gradients. */
    public void backward(DeviceBuffer dOut, DeviceBuffer dx, Gradients g) {
        long[] p = g.pointers();
        CudaNative.layerBackward(handle(), dOut.pointer(), dx.pointer(), p[0], p[1], p[2], p[3], p[4], p[5], p[6]);
    }

    /** Median milliseconds of forward+backward over {@code iters} runs after {@code warmup}, by CUDA events. */
    public float timeMs(DevicePlan plan, DeviceBuffer x, DeviceBuffer out, DeviceBuffer dOut, DeviceBuffer dx,
                        Gradients g, int warmup, int iters) {
        long[] gp = g.pointers();
        long[] p = {plan.offsets.pointer(), plan.tokenOfRow.pointer(), plan.weightOfRow.pointer(),
                plan.rowOfPair.pointer(), x.pointer(), out.pointer(), dOut.pointer(), dx.pointer(), gp[0], gp[1], gp[2],
                gp[3], gp[4], gp[5], gp[6]};
        return CudaNative.layerTime(handle(), plan.tokens, plan.topK, plan.rows, p, warmup, iters);
    }

    private long handle() {
        if (handle == 0) {
            throw new IllegalStateException("CUDA layer already closed");
        }
        return handle;
    }

    @Override
    public void close() {
        if (handle != 0) {
            CudaNative.layerDestroy(handle);
            handle = 0;
        }
    }
}
