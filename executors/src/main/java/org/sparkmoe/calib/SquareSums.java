package org.sparkmoe.calib;

import java.util.Arrays;

/**
 * What llama.cpp's imatrix keeps for one weight, exact and mergeable: for M matrices (the experts of a stacked
 * expert weight, or M = 1) of input width n, Σ x² per input column over the rows each matrix read, [M, n], and
 * those rows' count per matrix, [M]. Squares of float32 inputs are exact doubles and {@link ExactSums} adds them
 * without rounding, so any split into partitions and any merge order give the same bits.
 */
public final class SquareSums implements java.io.Serializable {
    private final int matrices;
    private final int width;
    private final ExactSums sums; // [M, n]
    private final long[] counts;  // [M]

    public SquareSums(int matrices, int width) {
        this.matrices = matrices;
        this.width = width;
        this.sums = new ExactSums(Math.multiplyExact(matrices, width));
        this.counts = new long[matrices];
    }

    public int matrices() {
        return matrices;
    }

    public int width() {
        return width;
    }

    /**
     * Adds {@code values.length / n} rows [rows, n] that matrix m read.
     *
     * @param what names the input in the message when a value is not finite or too large to square exactly
     */
    public void add(int m, float[] values, String what) {
        if (values.length % width != 0) {
            throw new IllegalArgumentException(what + ": " + values.length + " values are not rows of " + width);
        }
        int base = m * width;
        for (int at = 0; at < values.length; at += width) {
            for (int c = 0; c < width; c++) {
                double x = values[at + c];
                if (!(Math.abs(x) < 0x1p31)) {
                    throw new IllegalArgumentException(what + " holds " + x + "; expected finite inputs below 2^31 "
                            + "(does the model hold NaN or infinite weights?)");
                }
                sums.add(base + c, x * x); // exact: a float32 square fits a double
            }
        }
        counts[m] += values.length / width;
    }

    /** this += other (exact). */
    public SquareSums merge(SquareSums other) {
        if (other.matrices != matrices || other.width != width) {
            throw new IllegalArgumentException("merging square sums [" + other.matrices + ", " + other.width
                    + "] into [" + matrices + ", " + width + "]");
        }
        sums.merge(other.sums);
        for (int m = 0; m < matrices; m++) {
            counts[m] += other.counts[m];
        }
        return this;
    }

    /** Σ x² per column, [M, n] row-major, each rounded to the nearest double. */
    public double[] sums() {
        return sums.toArray();
    }

    /** Rows per matrix, [M]. */
    public long[] counts() {
        return counts.clone();
    }

    public boolean sameAs(SquareSums other) {
        return other.matrices == matrices && other.width == width && sums.sameAs(other.sums)
                && Arrays.equals(counts, other.counts);
    }
}
