package org.sparkmoe.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** {@link LoraExperts}: PEFT's initialisation from a seed, and the shape checks. */
class LoraExpertsTest {

    @Test
    void initIsKaimingUniformAWithZeroB() {
        // kaiming_uniform_(a=√5) on a [R, in] weight: gain √(2/(1+5)) · √(3/in) = 1/√in
        LoraExperts l = LoraExperts.init(3, 64, 10, 4, 16, 7, DataType.DOUBLE);
        assertArrayEquals(new long[] {3, 4, 64}, l.a().shape());
        assertArrayEquals(new long[] {3, 10, 4}, l.b().shape());
        assertEquals(4.0, l.scale());
        double bound = 1.0 / Math.sqrt(64);
        double[] a = l.a().data().asDouble();
        double mean = Arrays.stream(a).average().orElseThrow();
        double max = Arrays.stream(a).map(Math::abs).max().orElseThrow();
        assertTrue(max <= bound && max > 0.95 * bound, "max |A| " + max + " should approach the bound " + bound);
        assertEquals(0.0, mean, 0.1 * bound, "A should be centred");
        // variance of U(−b, b) is b²/3
        double var = Arrays.stream(a).map(v -> v * v).average().orElseThrow();
        assertEquals(bound * bound / 3, var, 0.2 * bound * bound / 3);
        assertEquals(0.0, l.b().amaxNumber().doubleValue(), 0.0);
    }

    @Test
    void sameSeedSameBitsOtherSeedOtherBits() {
        INDArray a1 = LoraExperts.init(4, 8, 6, 2, 4, 123, DataType.FLOAT).a();
        INDArray a2 = LoraExperts.init(4, 8, 6, 2, 4, 123, DataType.FLOAT).a();
        INDArray a3 = LoraExperts.init(4, 8, 6, 2, 4, 124, DataType.FLOAT).a();
        assertEquals(DataType.FLOAT, a1.dataType());
        assertArrayEquals(a1.data().asFloat(), a2.data().asFloat(), 0f);
        assertFalse(Arrays.equals(a1.data().asFloat(), a3.data().asFloat()));
        // the float64 draw is the float32 one before rounding
        INDArray a64 = LoraExperts.init(4, 8, 6, 2, 4, 123, DataType.DOUBLE).a();
        assertArrayEquals(a1.data().asFloat(), a64.castTo(DataType.FLOAT).data().asFloat(), 0f);
    }

    @Test
    void badArgumentsAreNamed() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraExperts.init(4, 8, 6, 0, 4, 1, DataType.FLOAT));
        assertTrue(e.getMessage().contains("rank=0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraExperts.init(4, 8, 6, 2, 0, 1, DataType.FLOAT));
        assertTrue(e.getMessage().contains("alpha") && e.getMessage().contains("0.0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraExperts.init(4, 8, 6, 2, 4, 1, DataType.HALF));
        assertTrue(e.getMessage().contains("HALF"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new LoraExperts(Nd4j.zeros(DataType.FLOAT, 4, 2, 8),
                Nd4j.zeros(DataType.FLOAT, 4, 6, 3), 4));
        assertTrue(e.getMessage().contains("[4, 2, 8]") && e.getMessage().contains("[4, 6, 3]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new LoraExperts(Nd4j.zeros(DataType.FLOAT, 4, 2, 8),
                Nd4j.zeros(DataType.DOUBLE, 4, 6, 2), 4));
        assertTrue(e.getMessage().contains("FLOAT") && e.getMessage().contains("DOUBLE"), e.getMessage());
    }
}
