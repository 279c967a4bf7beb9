package org.sparkmoe.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** bfloat16 rounding: to nearest, ties to even, as torch's .to(torch.bfloat16) and the kernels do. */
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
}
