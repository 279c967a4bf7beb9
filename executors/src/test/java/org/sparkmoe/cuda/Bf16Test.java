package org.sparkmoe.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * bfloat16 rounding: to nearest, ties to even, as torch's .to(torch.bfloat16) and the kernels do; the buffer
 * conversions the GPU transfers use against the scalar ones, bit for bit, in either byte order.
 */
class Bf16Test {

    @Test
    void exactValuesRoundTrip() {
        assertEquals((short) 0x3f80, Bf16.fromFloat(1.0f));
        assertEquals(-2.5f, Bf16.round(-2.5f));
        assertEquals(0.0f, Bf16.round(0.0f));
    }

    @Test
    void tiesGoToEven() {
        float ulp = (float) Math.pow(2, -7);                          // bf16 spacing in [1, 2)
        assertEquals(1.0f, Bf16.round(1.0f + ulp / 2));               // halfway, 1.0 has the even mantissa
        assertEquals(1.0f + 2 * ulp, Bf16.round(1.0f + 1.5f * ulp)); // halfway, 1 + 2 ulp is even
        assertEquals(1.0f + ulp, Bf16.round(1.0f + 0.75f * ulp));     // nearer the upper neighbour
    }

    @Test
    void nanStaysNanAndInfinityStays() {
        assertTrue(Float.isNaN(Bf16.round(Float.NaN)));
        assertEquals(Float.POSITIVE_INFINITY, Bf16.round(Float.POSITIVE_INFINITY));
    }

    @Test
    void overflowToInfinityAndSignallingNanQuieted() {
        assertEquals((short) 0x3f80, Bf16.fromFloat(1f));
        assertEquals((short) 0x3f80, Bf16.fromFloat(Float.intBitsToFloat(0x3f808000)));    // tie to even (down)
        assertEquals((short) 0x3f82, Bf16.fromFloat(Float.intBitsToFloat(0x3f818000)));    // tie to even (up)
        assertEquals((short) 0x3f81, Bf16.fromFloat(Float.intBitsToFloat(0x3f808001)));    // above the tie
        assertEquals((short) 0x7f80, Bf16.fromFloat(Float.intBitsToFloat(0x7f7fffff)));    // max float → +Inf
        assertEquals((short) 0x7fc0, Bf16.fromFloat(Float.intBitsToFloat(0x7f800001)));    // signalling NaN quieted
    }

    /**
     * Every class of float (zeros, subnormals, ties, the largest finite values, infinities, NaNs with payloads) and
     * random ones, little- and big-endian.
     */
    @Test
    void bufferRoundingHasTheScalarBits() {
        int[] special = {0, 0x80000000, 1, 0x807fffff, 0x3f808000, 0x3f818000, 0xbf808000, 0x3f808001, 0x7f7fffff,
                0xff7fffff, 0x7f7f8000, 0x7f800000, 0xff800000, 0x7f800001, 0xffc00000, 0x7fffffff, 0x7fa00000};
        int n = 40_000;
        float[] values = new float[n];
        SplittableRandom random = new SplittableRandom(5);
        for (int i = 0; i < n; i++) {
            values[i] = i < special.length ? Float.intBitsToFloat(special[i])
                    : i % 3 == 0 ? Float.intBitsToFloat(random.nextInt()) : (float) random.nextGaussian();
        }
        for (ByteOrder order : new ByteOrder[] {ByteOrder.LITTLE_ENDIAN, ByteOrder.BIG_ENDIAN}) {
            FloatBuffer from = ByteBuffer.allocateDirect(4 * n).order(ByteOrder.nativeOrder()).asFloatBuffer();
            from.put(0, values);
            ByteBuffer into = ByteBuffer.allocateDirect(2 * n).order(order);
            Bf16.round(from, into, n);
            for (int i = 0; i < n; i++) {
                assertEquals(Bf16.fromFloat(values[i]), into.getShort(2 * i), "value " + i + " ("
                        + Integer.toHexString(Float.floatToRawIntBits(values[i])) + "), " + order);
            }
        }
    }

    @Test
    void bufferWideningHasTheScalarBitsForEveryBf16() {
        int n = 1 << 16;
        ByteBuffer from = ByteBuffer.allocateDirect(2 * n + 6).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
            from.putShort(2 * i, (short) i);
        }
        FloatBuffer into = FloatBuffer.allocate(n + 3);
        Bf16.widen(from, into, n + 3);                                  // three zeros past the 2^16 values
        for (int i = 0; i < n + 3; i++) {
            assertEquals(Float.floatToRawIntBits(Bf16.toFloat(from.getShort(2 * i))),
                    Float.floatToRawIntBits(into.get(i)), "bf16 " + Integer.toHexString(i));
        }
    }
}
