package org.sparkmoe.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * One device allocation (cudaMalloc), freed by {@link #close()}. Host transfers go through direct little-endian
 * buffers; float data can be stored as float32 or as bfloat16 (rounded to nearest even).
 */
public final class DeviceBuffer implements AutoCloseable {
    private long pointer;
    private final long bytes;

    private DeviceBuffer(long pointer, long bytes) {
        this.pointer = pointer;
        this.bytes = bytes;
    }

    public static DeviceBuffer allocate(long bytes) {
        CudaLibrary.load();
        if (bytes < 0) {
            throw new IllegalArgumentException("device buffer size must be ≥ 0, got " + bytes);
        }
        return new DeviceBuffer(CudaNative.malloc(bytes), bytes);
    }

    public static DeviceBuffer ofFloats(float[] values) {
        ByteBuffer b = host(4L * values.length);
        b.asFloatBuffer().put(values);
        return of(b);
    }

    /** The values rounded to bfloat16, 2 bytes each. */
    public static DeviceBuffer ofBf16(float[] values) {
        ByteBuffer b = host(2L * values.length);
        for (int i = 0; i < values.length; i++) {
            b.putShort(2 * i, Bf16.fromFloat(values[i]));
        }
        return of(b);
    }

    public static DeviceBuffer ofInts(int[] values) {
        ByteBuffer b = host(4L * values.length);
        b.asIntBuffer().put(values);
        return of(b);
    }

    /** A new buffer holding the {@code capacity()} bytes of the direct buffer {@code b}. */
    public static DeviceBuffer of(ByteBuffer b) {
        DeviceBuffer d = allocate(b.capacity());
        CudaNative.copyToDevice(d.pointer(), b, b.capacity());
        return d;
    }

    /** Copies the {@code capacity()} bytes of the direct buffer {@code b} into this buffer at byte {@code offset}. */
    public void write(long offset, ByteBuffer b) {
        if (offset < 0 || offset + b.capacity() > bytes) {
            throw new IllegalArgumentException(b.capacity() + " bytes at " + offset + " do not fit a device buffer of "
                    + bytes + " bytes");
        }
        CudaNative.copyToDevice(pointer() + offset, b, b.capacity());
    }

    /** Copies this buffer's first {@code b.capacity()} bytes into the direct buffer {@code b}. */
    public void read(ByteBuffer b) {
        read(0, b);
    }

    /** Copies {@code b.capacity()} bytes of this buffer from byte {@code offset} into the direct buffer {@code b}. */
    public void read(long offset, ByteBuffer b) {
        if (offset < 0) {
            throw new IllegalArgumentException("a read offset must be ≥ 0, got " + offset);
        }
        checkSize(offset + b.capacity());
        CudaNative.copyToHost(b, pointer() + offset, b.capacity());
    }

    private static ByteBuffer host(long bytes) {
        if (bytes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("host transfers are limited to 2 GiB, got " + bytes + " bytes");
        }
        return ByteBuffer.allocateDirect((int) bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    public long pointer() {
        if (pointer == 0) {
            throw new IllegalStateException("device buffer already closed");
        }
        return pointer;
    }

    public long bytes() {
        return bytes;
    }

    public float[] readFloats(int n) {
        ByteBuffer b = read(4L * n);
        float[] v = new float[n];
        b.asFloatBuffer().get(v);
        return v;
    }

    public float[] readBf16(int n) {
        ByteBuffer b = read(2L * n);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = Bf16.toFloat(b.getShort(2 * i));
        }
        return v;
    }

    private ByteBuffer read(long n) {
        checkSize(n);
        ByteBuffer b = host(n);
        CudaNative.copyToHost(b, pointer(), n);
        return b;
    }

    /** Fills n elements (float32 when !bf16) with U(lo, hi) from a hash of (seed, index), on the device. */
    public void fillUniform(long n, boolean bf16, long seed, float lo, float hi) {
        checkSize(n * (bf16 ? 2 : 4));
        CudaNative.fillUniform(pointer(), n, bf16 ? CudaNative.BF16 : CudaNative.F32, seed, lo, hi);
    }

    private void checkSize(long n) {
        if (n > bytes) {
            throw new IllegalArgumentException("device buffer of " + bytes + " bytes cannot hold " + n + " bytes");
        }
    }

    @Override
    public void close() {
        if (pointer != 0) {
            CudaNative.free(pointer);
            pointer = 0;
        }
    }
}
