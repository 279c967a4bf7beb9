package org.sparkmoe.bench;

import java.util.Arrays;

/** Median wall time of a piece of work, after warm-up runs, measured with {@link System#nanoTime()}. */
public final class Stopwatch {
    private Stopwatch() {
    }

    /** Runs {@code work} {@code warmups} times unmeasured, then {@code repeats} times; returns the median ms. */
    public static double medianMs(int warmups, int repeats, Runnable work) {
        if (repeats < 1) {
            throw new IllegalArgumentException("repeats must be at least 1, got " + repeats);
        }
        for (int i = 0; i < warmups; i++) {
            work.run();
        }
        double[] ms = new double[repeats];
        for (int i = 0; i < repeats; i++) {
            long t0 = System.nanoTime();
            work.run();
            ms[i] = (System.nanoTime() - t0) / 1e6;
        }
        Arrays.sort(ms);
        return repeats % 2 == 1 ? ms[repeats / 2] : (ms[repeats / 2 - 1] + ms[repeats / 2]) / 2;
    }
}
