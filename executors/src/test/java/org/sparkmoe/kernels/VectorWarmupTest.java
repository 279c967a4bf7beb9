package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * The vector kernels are switched on by their warm-up thread, and a chunk gives the same bits before and after the
 * switch (the scalar twin, then the vector kernel).
 */
class VectorWarmupTest {
    @Test
    void kernelsSwitchToVectorsWithTheSameBits() throws InterruptedException {
        int n = 1027;
        double[] z = new double[n + GatedActivation.LANE_MULTIPLE];
        double[] u = new double[z.length];
        for (int i = 0; i < n; i++) {
            z[i] = (float) Math.sin(i) * 9;
            u[i] = (float) Math.cos(i * 0.37);
        }
        double[] scalar = new double[z.length];
        GatedActivation.SWIGLU.forwardScalar(z, u, scalar, n, true);
        assertTrue(VectorWarmup.awaitReady(300_000), "the vector kernels' warm-up did not finish in 5 minutes");
        double[] switched = new double[z.length];
        GatedActivation.SWIGLU.forward(z, u, switched, n, true);
        assertArrayEquals(java.util.Arrays.copyOf(scalar, n), java.util.Arrays.copyOf(switched, n), 0.0);
        double[] acc = java.util.Arrays.copyOf(u, n);
        double[] accScalar = acc.clone();
        VectorRows.addScaled(acc, 0, 0.3, z, n, true);
        VectorRows.addScaledScalar(accScalar, 0, 0.3, z, 0, n, true);
        assertArrayEquals(accScalar, acc, 0.0);
    }
}
