package org.sparkmoe.train;

import org.junit.jupiter.api.Test;

import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

class WindowSamplerTest {

    @Test
    void everyEpochVisitsEveryWindowOnce() {
        WindowSampler sampler = new WindowSampler(7, 1, 12);
        for (int epoch = 0; epoch < 3; epoch++) {
            int[] seen = new int[12];
            for (int step = epoch * 3; step < epoch * 3 + 3; step++) { // 3 steps of 4 windows = one epoch
                for (int w : sampler.batch(step, 4)) {
                    seen[w]++;
                }
            }
            int[] once = new int[12];
            Arrays.fill(once, 1);
            assertArrayEquals(once, seen, "epoch " + epoch);
        }
    }

    @Test
    void batchesDependOnlyOnSeedPartitionAndStep() {
        WindowSampler a = new WindowSampler(7, 0, 10);
        WindowSampler b = new WindowSampler(7, 0, 10);
        assertArrayEquals(a.batch(5, 3), b.batch(5, 3));
        assertFalse(Arrays.equals(a.batch(5, 10), new WindowSampler(7, 1, 10).batch(5, 10)),
                "partitions shuffle differently");
        assertFalse(Arrays.equals(a.batch(0, 10), a.batch(1, 10)), "epochs shuffle differently");
    }

    @Test
    void aBatchMayStraddleEpochs() {
        WindowSampler sampler = new WindowSampler(3, 0, 5);
        int[] batch = sampler.batch(1, 4); // positions 4..7: the last of epoch 0, three of epoch 1
        int[] epoch0 = sampler.batch(0, 5);
        int[] epoch1 = sampler.batch(1, 5);
        assertArrayEquals(new int[] {epoch0[4], epoch1[0], epoch1[1], epoch1[2]}, batch);
    }

    @Test
    void aPartitionWithoutWindowsIsAnError() {
        assertThrows(IllegalArgumentException.class, () -> new WindowSampler(1, 3, 0));
    }
}
