package org.sparkmoe.io;

import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Narrowing float32 to bf16 and f16. Expected words are the IEEE 754 / bfloat16 encodings, checked by hand (and equal
 * to {@code torch.tensor([x]).to(torch.bfloat16 / torch.float16).view(torch.int16)}); the round trips go through
 * every one of the 65536 patterns.
 */
class ElementEncoderTest {

    @Test
    void everyBf16AndF16PatternSurvivesWideningThenNarrowing() {
        for (int bits = 0; bits < 0x10000; bits++) {
            short word = (short) bits;
            float bf = HalfFloats.bf16ToFloat(word);
            if (!Float.isNaN(bf)) {
                assertEquals(word, HalfFloats.floatToBf16(bf), "bf16 " + Integer.toHexString(bits));
            }
            float half = HalfFloats.f16ToFloat(word);
            if (!Float.isNaN(half)) {
                assertEquals(word, HalfFloats.floatToF16(half), "f16 " + Integer.toHexString(bits));
            } else {
                assertTrue(Float.isNaN(HalfFloats.f16ToFloat(HalfFloats.floatToF16(half))));
            }
        }
    }

    @Test
    void bf16RoundsToNearestEven() {
        assertEquals((short) 0x3f80, HalfFloats.floatToBf16(1f));
        // 1 + 2^-8 lies half-way between 1 (0x3f80, even) and 1 + 2^-7 (0x3f81): ties go to even
        assertEquals((short) 0x3f80, HalfFloats.floatToBf16(1f + 0x1p-8f));
        // 1 + 3·2^-8 lies half-way between 0x3f81 (odd) and 0x3f82 (even)
        assertEquals((short) 0x3f82, HalfFloats.floatToBf16(1f + 3 * 0x1p-8f));
        // just above the half-way point rounds up
        assertEquals((short) 0x3f81, HalfFloats.floatToBf16(Math.nextUp(1f + 0x1p-8f)));
        assertEquals((short) 0xbf80, HalfFloats.floatToBf16(-1f));
        assertEquals((short) 0x7f80, HalfFloats.floatToBf16(Float.MAX_VALUE)); // rounds up to inf
        assertTrue(Float.isNaN(HalfFloats.bf16ToFloat(HalfFloats.floatToBf16(Float.NaN))));
    }

    @Test
    void f16RoundsToNearestEvenWithSubnormalsAndOverflow() {
        assertEquals((short) 0x3c00, HalfFloats.floatToF16(1f));
        assertEquals((short) 0x3c00, HalfFloats.floatToF16(1f + 0x1p-11f)); // tie → even
        assertEquals((short) 0x3c02, HalfFloats.floatToF16(1f + 3 * 0x1p-11f)); // tie → even
        assertEquals((short) 0x7bff, HalfFloats.floatToF16(65504f)); // largest finite
        assertEquals((short) 0x7bff, HalfFloats.floatToF16(65519f));
        assertEquals((short) 0x7c00, HalfFloats.floatToF16(65520f)); // tie between 65504 and 2^16 → inf
        assertEquals((short) 0xfc00, HalfFloats.floatToF16(Float.NEGATIVE_INFINITY));
        assertEquals((short) 0x0400, HalfFloats.floatToF16(0x1p-14f)); // smallest normal
        assertEquals((short) 0x0001, HalfFloats.floatToF16(0x1p-24f)); // smallest subnormal
        assertEquals((short) 0x0000, HalfFloats.floatToF16(0x1p-25f)); // tie between 0 and 2^-24 → 0
        assertEquals((short) 0x0001, HalfFloats.floatToF16(1.5f * 0x1p-25f));
        assertEquals((short) 0x0002, HalfFloats.floatToF16(3 * 0x1p-25f)); // tie between 1 and 2 → 2
        assertEquals((short) 0x8000, HalfFloats.floatToF16(-0x1p-30f));
        assertEquals((short) 0x03ff, HalfFloats.floatToF16(0x1p-14f - 0x1p-24f)); // largest subnormal
        assertEquals((short) 0x0400, HalfFloats.floatToF16(0x1p-14f - 0x1p-25f)); // rounds up into the normals
    }

    @Test
    void encodesLittleEndianIntoTheBuffer() {
        ByteBuffer bytes = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
        ElementEncoder.fromFloats(DType.BF16, new float[] {9f, 1f, -2f}, 1, 2, bytes);
        ElementEncoder.fromFloats(DType.F16, new float[] {1f}, 0, 1, bytes);
        ElementEncoder.fromFloats(DType.F32, new float[] {1f}, 0, 1, bytes);
        assertEquals(10, bytes.position());
        assertEquals((short) 0x3f80, bytes.getShort(0));
        assertEquals((short) 0xc000, bytes.getShort(2));
        assertEquals((short) 0x3c00, bytes.getShort(4));
        assertEquals(1f, bytes.getFloat(6));
        assertThrows(IllegalArgumentException.class,
                () -> ElementEncoder.fromFloats(DType.I64, new float[1], 0, 1, ByteBuffer.allocate(8)));
        assertThrows(IllegalArgumentException.class,
                () -> ElementEncoder.fromFloats(DType.F32, new float[1], 0, 1, ByteBuffer.allocate(4)));
    }
}
