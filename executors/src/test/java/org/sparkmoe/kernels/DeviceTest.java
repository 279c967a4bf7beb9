package org.sparkmoe.kernels;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class DeviceTest {

    @Test
    void parsesNamesInAnyCase() {
        assertEquals(Device.CUDA, Device.parse("CUDA"));
        assertEquals(Device.CPU, Device.parse(" cpu"));
    }

    @Test
    void unknownNameIsRejected() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Device.parse("tpu"));
        assertEquals("unknown device 'tpu', expected cpu or cuda", e.getMessage());
    }

    @Test
    void cpuGivesTheNd4jGroupedGemm() {
        assertTrue(Device.CPU.groupedGemm() instanceof Nd4jGroupedGemm);
    }
}
