package org.sparkmoe.train;

import java.util.SplittableRandom;

/**
 * Which of a partition's N windows make up the batch of each optimiser step: the windows are visited epoch by
 * epoch, each epoch in its own seeded permutation, B at a time; a batch may straddle two epochs. Depends only on
 * (root seed, partition, step), so a rerun task or a resumed job takes exactly the same windows.
 */
public final class WindowSampler {
    private final long rootSeed;
    private final int partition;
    private final int windows; // N

    public WindowSampler(long rootSeed, int partition, int windows) {
        if (windows < 1) {
            throw new IllegalArgumentException("partition " + partition + " has no windows to train on");
        }
        this.rootSeed = rootSeed;
        this.partition = partition;
        this.windows = windows;
    }

    /** Indices into the partition's windows for step {@code step} (0-based), B of them. */
    public int[] batch(long step, int batchWindows) {
        int[] out = new int[batchWindows];
        long first = step * batchWindows;
        int[] order = null;
        long orderEpoch = -1;
        for (int j = 0; j < batchWindows; j++) {
            long position = first + j;
            long epoch = position / windows;
            if (epoch != orderEpoch) {
                order = permutation(epoch);
                orderEpoch = epoch;
            }
            out[j] = order[(int) (position % windows)];
        }
        return out;
    }

    /** Fisher–Yates with a generator seeded from (root, partition, epoch). */
    private int[] permutation(long epoch) {
        SplittableRandom random = new SplittableRandom(
                Seeds.derive(rootSeed, "windows/partition/" + partition + "/epoch/" + epoch));
        int[] order = new int[windows];
        for (int i = 0; i < windows; i++) {
            order[i] = i;
        }
        for (int i = windows - 1; i > 0; i--) {
            int k = random.nextInt(i + 1);
            int t = order[i];
            order[i] = order[k];
            order[k] = t;
        }
        return order;
    }
}
