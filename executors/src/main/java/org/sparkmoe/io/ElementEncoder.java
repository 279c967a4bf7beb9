package org.sparkmoe.io;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.EnumSet;
import java.util.Set;

/**
 * Turns Java floats into the little-endian element bytes of a floating-point dtype (the inverse of
 * {@link ElementDecoder}): F32 as is, F16 and BF16 rounded to nearest even, F64 widened.
 */
public final class ElementEncoder {

    /** The dtypes floats can be written as. */
    public static final Set<DType> FLOAT_TYPES = EnumSet.of(DType.F32, DType.F16, DType.BF16, DType.F64);

    private ElementEncoder() {
    }

    /** Writes {@code count} values of {@code src} from {@code first} at {@code dst}'s position, advancing it. */
    public static void fromFloats(DType dtype, float[] src, int first, int count, ByteBuffer dst) {
        if (dst.order() != ByteOrder.LITTLE_ENDIAN) {
            throw new IllegalArgumentException("safetensors bytes are little-endian, the buffer is " + dst.order());
        }
        switch (dtype) {
            case F32 -> {
                for (int i = first; i < first + count; i++) {
                    dst.putFloat(src[i]);
                }
            }
            case F64 -> {
                for (int i = first; i < first + count; i++) {
                    dst.putDouble(src[i]);
                }
            }
            case F16 -> {
                for (int i = first; i < first + count; i++) {
                    dst.putShort(HalfFloats.floatToF16(src[i]));
                }
            }
            case BF16 -> {
                for (int i = first; i < first + count; i++) {
                    dst.putShort(HalfFloats.floatToBf16(src[i]));
                }
            }
            default -> throw new IllegalArgumentException("cannot write floats as " + dtype
                    + " (supported: " + FLOAT_TYPES + ")");
        }
    }
}
