package org.sparkmoe.cuda;

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

    /** f rounded to the nearest bfloat16. */
    public static float round(float f) {
        return toFloat(fromFloat(f));
    }
}
