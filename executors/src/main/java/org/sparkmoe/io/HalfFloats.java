package org.sparkmoe.io;

/**
 * The two 16-bit float formats: widening to float32 (exact: every value is representable) and narrowing from float32
 * (round to nearest, ties to even, like PyTorch's {@code tensor.to(torch.bfloat16 / torch.float16)}).
 */
final class HalfFloats {

    private HalfFloats() {
    }

    /** IEEE 754 binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
    static float f16ToFloat(short half) {
        int bits = half & 0xffff;
        int sign = (bits & 0x8000) << 16;
        int exponent = (bits >>> 10) & 0x1f;
        int mantissa = bits & 0x3ff;
        if (exponent == 0x1f) { // inf, NaN (payload kept)
            return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
        }
        if (exponent == 0) { // zero or subnormal: mantissa * 2^-24
            float magnitude = mantissa * 0x1p-24f;
            return sign == 0 ? magnitude : -magnitude;
        }
        return Float.intBitsToFloat(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
    }

    /** bfloat16: the top 16 bits of a float32. */
    static float bf16ToFloat(short bf16) {
        return Float.intBitsToFloat((bf16 & 0xffff) << 16);
    }

    /** float32 → bfloat16: the top 16 bits, rounded to nearest even; NaN stays a (quiet) NaN. */
    static short floatToBf16(float value) {
        int bits = Float.floatToRawIntBits(value);
        if ((bits & 0x7fffffff) > 0x7f800000) {
            return (short) ((bits >>> 16) | 0x0040);
        }
        int rounding = 0x7fff + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }

    /** float32 → IEEE 754 binary16, rounded to nearest even; beyond ±65504 (after rounding) it becomes ±inf. */
    static short floatToF16(float value) {
        int bits = Float.floatToRawIntBits(value);
        int sign = (bits >>> 16) & 0x8000;
        int abs = bits & 0x7fffffff;
        if (abs >= 0x7f800000) { // inf, NaN (quiet, top payload bits kept)
            return (short) (sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 | ((abs >>> 13) & 0x3ff) : 0));
        }
        if (abs >= 0x477ff000) { // ≥ 65520 rounds to inf
            return (short) (sign | 0x7c00);
        }
        if (abs >= 0x38800000) { // normal: rebias the exponent (127 → 15), round the 13 dropped mantissa bits
            return (short) (sign | ((abs - 0x38000000) + 0x0fff + ((abs >>> 13) & 1)) >>> 13);
        }
        if (abs < 0x33000000) { // below 2^-25: rounds to zero
            return (short) sign;
        }
        // subnormal: value = m · 2^(e-150) = k · 2^-24 with k = m >> (126 - e)
        int exponent = abs >>> 23;
        int mantissa = (abs & 0x7fffff) | 0x800000;
        int shift = 126 - exponent;
        int k = mantissa >>> shift;
        int remainder = mantissa & ((1 << shift) - 1);
        int half = 1 << (shift - 1);
        if (remainder > half || remainder == half && (k & 1) == 1) {
            k++;
        }
        return (short) (sign | k);
    }
}
