package org.sparkmoe.cuda;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;

/** bfloat16 conversions: the upper 16 bits of a float32, rounded to nearest even (NaN kept quiet). */
public final class Bf16 {
    private Bf16() {
    }

    public static short fromFloat(float f) {
        int bits = Float.floatToRawIntBits(f);
        if ((bits & 0x7fffffff) > 0x7f800000) {
            return (short) ((bits >>> 16) | 0x40);                        // NaN stays NaN
        }
        int rounding = 0x7fff + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }

    public static float toFloat(short b) {
        return Float.intBitsToFloat((b & 0xffff) << 16);
    }

    /** into's bytes 2i, 2i+1 = from[i] rounded to bfloat16 (little-endian), i = 0..n-1; positions are ignored. */
    public static void round(FloatBuffer from, ByteBuffer into, int n) {
        for (int i = 0; i < n; i++) {
            into.putShort(2 * i, fromFloat(from.get(i)));
        }
    }

    /** into[i] = the bfloat16 at bytes 2i, 2i+1 of {@code from} (little-endian), i = 0..n-1; positions are ignored. */
    public static void widen(ByteBuffer from, FloatBuffer into, int n) {
        for (int i = 0; i < n; i++) {
            into.put(i, toFloat(from.getShort(2 * i)));
        }
    }

    /** f rounded to the nearest bfloat16. */
    public static float round(float f) {
        return toFloat(fromFloat(f));
    }
}
