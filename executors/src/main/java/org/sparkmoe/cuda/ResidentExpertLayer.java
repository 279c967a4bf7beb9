package org.sparkmoe.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;

/**
 * {@link ExpertLayer} on one GPU in bf16 ({@link CudaMoeLoraLayer}: tensor cores, fp32 accumulation): the frozen
 * expert weights are uploaded once, expert by expert, and stay on the device until {@link #close()}. Each call copies
 * its activations in (rounded to bf16) and its results out (bf16 activations widened, fp32 gradients as they are):
 * per forward x and out [T, D] and the plan, per backward dOut and dx [T, D] and the LoRA gradients; per
 * {@link #setLora} the factors. Host data goes through one staging buffer of {@value #STAGING_BYTES} bytes, a
 * chunk at a time, whatever the pass's size. Every call first makes the layer's GPU current on the calling thread.
 */
public final class ResidentExpertLayer implements ExpertLayer {
    /** The projections {@link Weights#bf16} is asked for. */
    public static final int GATE = 0;
    public static final int UP = 1;
    public static final int DOWN = 2;

    /** Where the frozen weights come from: the checkpoint's bytes where they are bf16 already. */
    public interface Weights {
        /**
         * Expert e's matrix of {@code projection} (GATE, UP: [I, D]; DOWN: [D, I]) as bf16, 'c' order, little-endian:
         * a direct buffer whose capacity is exactly its bytes (a view of a mapped checkpoint, or a copy).
         */
        ByteBuffer bf16(int projection, int expert);
    }

    /** Bytes of the host staging buffer that every transfer goes through (a chunk at a time). */
    static final int STAGING_BYTES = 256 << 10;

    private final CudaMoeLoraLayer layer;
    private final int ordinal;
    private final ByteBuffer staging = ByteBuffer.allocateDirect(STAGING_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private DevicePlan plan;          // the last forward's: the layer reads it again in backward

    private ResidentExpertLayer(CudaMoeLoraLayer layer, int ordinal) {
        this.layer = layer;
        this.ordinal = ordinal;
    }

    /**
     * A layer on GPU {@code ordinal} with the weights of {@code weights} uploaded: E, D, I and R multiples of 8
     * except E; the LoRA scale is {@code scale}.
     */
    public static ResidentExpertLayer upload(int ordinal, int experts, int hidden, int intermediate, int rank,
                                             float scale, Weights weights) {
        CudaLibrary.useDevice(ordinal);
        CudaMoeLoraLayer layer = new CudaMoeLoraLayer(CudaMoeLoraLayer.Precision.BF16, experts, hidden, intermediate,
                rank, scale);
        try (DeviceBuffer w1 = stack(weights, GATE, experts, (long) intermediate * hidden);
             DeviceBuffer w3 = stack(weights, UP, experts, (long) intermediate * hidden);
             DeviceBuffer w2 = stack(weights, DOWN, experts, (long) hidden * intermediate)) {
            layer.setBase(w1, w3, w2);          // packed into the layer's own buffers; these three are freed
            return new ResidentExpertLayer(layer, ordinal);
        } catch (RuntimeException e) {
            layer.close();
            throw e;
        }
    }

    /** The E matrices of one projection, one after another, [E, out, in] bf16 on the device. */
    private static DeviceBuffer stack(Weights weights, int projection, int experts, long elements) {
        DeviceBuffer d = DeviceBuffer.allocate(2 * elements * experts);
        try {
            for (int e = 0; e < experts; e++) {
                ByteBuffer m = weights.bf16(projection, e);
                if (m.capacity() != 2 * elements) {
                    throw new IllegalArgumentException("expert " + e + " of projection " + projection + " has "
                            + m.capacity() + " bytes, expected " + 2 * elements + " (bf16)");
                }
                d.write(2 * elements * e, m);
            }
            return d;
        } catch (RuntimeException ex) {
            d.close();
            throw ex;
        }
    }

    @Override
    public int experts() {
        return layer.experts;
    }

    @Override
    public int hidden() {
        return layer.hidden;
    }

    @Override
    public int intermediate() {
        return layer.intermediate;
    }

    @Override
    public int rank() {
        return layer.rank;
    }

    @Override
    public void setLora(FloatBuffer a1, FloatBuffer b1, FloatBuffer a3, FloatBuffer b3, FloatBuffer a2,
                        FloatBuffer b2) {
        CudaLibrary.useDevice(ordinal);
        long e = experts();
        long r = rank();
        long d = hidden();
        long i = intermediate();
        try (DeviceBuffer da1 = bf16(a1, e * r * d); DeviceBuffer db1 = bf16(b1, e * i * r);
             DeviceBuffer da3 = bf16(a3, e * r * d); DeviceBuffer db3 = bf16(b3, e * i * r);
             DeviceBuffer da2 = bf16(a2, e * r * i); DeviceBuffer db2 = bf16(b2, e * d * r)) {
            layer.setLora(da1, db1, da3, db3, da2, db2);
        }
    }

    @Override
    public void forward(Plan p, FloatBuffer x, FloatBuffer out) {
        CudaLibrary.useDevice(ordinal);
        closePlan();
        plan = new DevicePlan(p.offsets(), p.perm(), p.tokenOfRow(), p.weightOfRow(), p.topK());
        long n = (long) p.tokens() * hidden();
        try (DeviceBuffer dx = bf16(x, n); DeviceBuffer dOut = DeviceBuffer.allocate(2 * n)) {
            layer.forward(plan, dx, dOut);
            widen(dOut, out, n);
        }
    }

    @Override
    public void backward(FloatBuffer dOut, FloatBuffer dx, Gradients into) {
        if (plan == null) {
            throw new IllegalStateException("a backward needs a forward first");
        }
        CudaLibrary.useDevice(ordinal);
        long n = (long) plan.tokens * hidden();
        CudaMoeLoraLayer.Gradients g = CudaMoeLoraLayer.Gradients.allocate(experts(), hidden(), intermediate(),
                rank(), plan.rows);
        try (DeviceBuffer ddOut = bf16(dOut, n); DeviceBuffer ddx = DeviceBuffer.allocate(2 * n)) {
            layer.backward(ddOut, ddx, g);
            widen(ddx, dx, n);
            read(g.dA1(), into.dA1());
            read(g.dB1(), into.dB1());
            read(g.dA3(), into.dA3());
            read(g.dB3(), into.dB3());
            read(g.dA2(), into.dA2());
            read(g.dB2(), into.dB2());
            read(g.dGates(), into.dGates(), plan.rows);
        } finally {
            for (DeviceBuffer b : new DeviceBuffer[] {g.dA1(), g.dB1(), g.dA3(), g.dB3(), g.dA2(), g.dB2(),
                    g.dGates()}) {
                b.close();
            }
        }
    }

    /** n floats of {@code from} rounded to bf16, on the device. */
    private DeviceBuffer bf16(FloatBuffer from, long n) {
        DeviceBuffer d = DeviceBuffer.allocate(2 * n);
        try {
            int chunk = STAGING_BYTES / 2;
            for (long at = 0; at < n; at += chunk) {
                int len = (int) Math.min(chunk, n - at);
                ByteBuffer part = staging.slice(0, 2 * len).order(ByteOrder.LITTLE_ENDIAN);
                Bf16.round(from.slice(Math.toIntExact(at), len), part, len);
                d.write(2 * at, part);
            }
            return d;
        } catch (RuntimeException e) {
            d.close();
            throw e;
        }
    }

    /** n bf16 values of {@code from} widened into {@code into}. */
    private void widen(DeviceBuffer from, FloatBuffer into, long n) {
        int chunk = STAGING_BYTES / 2;
        for (long at = 0; at < n; at += chunk) {
            int len = (int) Math.min(chunk, n - at);
            ByteBuffer part = staging.slice(0, 2 * len).order(ByteOrder.LITTLE_ENDIAN);
            from.read(2 * at, part);
            Bf16.widen(part, into.slice(Math.toIntExact(at), len), len);
        }
    }

    /** The fp32 gradient buffer {@code from} into {@code into} (all of it). */
    private void read(DeviceBuffer from, FloatBuffer into) {
        read(from, into, from.bytes() / Float.BYTES);
    }

    /** n floats of the fp32 buffer {@code from} into {@code into}. */
    private void read(DeviceBuffer from, FloatBuffer into, long n) {
        int chunk = STAGING_BYTES / Float.BYTES;
        for (long at = 0; at < n; at += chunk) {
            int len = (int) Math.min(chunk, n - at);
            ByteBuffer part = staging.slice(0, Float.BYTES * len).order(ByteOrder.LITTLE_ENDIAN);
            from.read(Float.BYTES * at, part);
            into.put(Math.toIntExact(at), part.asFloatBuffer(), 0, len);
        }
    }

    private void closePlan() {
        if (plan != null) {
            plan.close();
            plan = null;
        }
    }

    @Override
    public void close() {
        CudaLibrary.useDevice(ordinal);
        closePlan();
        layer.close();
    }
}
