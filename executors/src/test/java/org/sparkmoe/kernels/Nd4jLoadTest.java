package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.factory.Nd4j;

/** ND4J's backend loads in one background thread per JVM, however many times the preload is started. */
class Nd4jPreloadTest {
    @Test
    void theBackendLoadsOnceInADaemonThreadThatEnds() throws InterruptedException {
        Thread first = Nd4jPreload.start();
        assertNotNull(first, "the first start makes the loading thread");
        assertNull(Nd4jPreload.start(), "a second start makes no second thread");
        first.join(120_000);
        assertFalse(first.isAlive(), "the load did not end within 2 minutes");
        assertNotNull(Nd4j.getExecutioner());
    }
}
