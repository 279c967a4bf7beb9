package org.sparkmoe.io;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.nio.DoubleBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;
import java.util.EnumSet;
import java.util.Set;

/**
 * Turns little-endian element bytes into Java floats or longs. Each call works on its own buffer
 * views with absolute indexing, so threads can decode the same mapped file at once.
 */
final class ElementDecoder {

    static final Set<DType> FLOAT_TYPES = EnumSet.of(DType.F32, DType.F16, DType.BF16, DType.F64);
    /** What {@code stored} maps: the float types and FP8 codes. */
    static final Set<DType> STORED_TYPES = EnumSet.of(DType.F32, DType.F16, DType.BF16, DType.F64, DType.F8_E4M3);
    static final Set<DType> INTEGER_TYPES = EnumSet.of(DType.I64, DType.I32);

    private ElementDecoder() {
    }

    /**
     * Widens every element of {@code bytes} (little-endian, dtype in FLOAT_TYPES) into dst[first..] (absolute puts:
     * {@code dst} may be an off-heap buffer, so no heap copy of the tensor is made).
     */
    static void toFloats(DType dtype, ByteBuffer bytes, FloatBuffer dst, int first) {
        switch (dtype) {
            case F32 -> {
                FloatBuffer src = bytes.asFloatBuffer();
                dst.put(first, src, 0, src.limit());
            }
            case F64 -> {
                DoubleBuffer src = bytes.asDoubleBuffer();
                for (int i = 0; i < src.limit(); i++) {
                    dst.put(first + i, (float) src.get(i));
                }
            }
            case F16 -> {
                ShortBuffer src = bytes.asShortBuffer();
                for (int i = 0; i < src.limit(); i++) {
                    dst.put(first + i, HalfFloats.f16ToFloat(src.get(i)));
                }
            }
            case BF16 -> {
                ShortBuffer src = bytes.asShortBuffer();
                for (int i = 0; i < src.limit(); i++) {
                    dst.put(first + i, HalfFloats.bf16ToFloat(src.get(i)));
                }
            }
            default -> throw new IllegalArgumentException("not a float dtype: " + dtype);
        }
    }

    /** Widens every element of {@code bytes} (little-endian, dtype in INTEGER_TYPES) into dst[first..]. */
    static void toLongs(DType dtype, ByteBuffer bytes, long[] dst, int first) {
        switch (dtype) {
            case I64 -> {
                bytes.asLongBuffer().get(dst, first, bytes.remaining() / Long.BYTES);
            }
            case I32 -> {
                IntBuffer src = bytes.asIntBuffer();
                for (int i = 0; i < src.limit(); i++) {
                    dst[first + i] = src.get(i);
                }
            }
            default -> throw new IllegalArgumentException("not an integer dtype: " + dtype);
        }
    }
}
