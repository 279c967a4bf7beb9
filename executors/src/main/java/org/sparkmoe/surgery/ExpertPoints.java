package org.sparkmoe.surgery;

import org.nd4j.linalg.api.ndarray.INDArray;

import java.nio.ByteOrder;
import java.nio.FloatBuffer;

/**
 * Experts {@code from..to-1} of an MoE layer as k-means points: each expert's projections (w1, w3, w2, in
 * {@link org.sparkmoe.io.CheckpointLayout.Projection} order) flattened row by row and concatenated, in float64 of the
 * float32 weights. Never held: every {@link #distances} pass streams blocks of rows of every member from the
 * memory-mapped checkpoint past the centres, so a pass holds (N + 1) × one block of float64 on the heap, at most
 * {@link #BLOCK_BYTES}.
 */
final class ExpertPoints implements KMeans.Points {
    /** Heap bytes of one pass's float64 blocks (the N experts' and a centre's mean), at least one row each. */
    static final long BLOCK_BYTES = 32L << 20;

    private final ExpertStack[] stacks;   // per projection, E experts each
    private final int from;
    private final int to;

    ExpertPoints(ExpertStack[] stacks, int from, int to) {
        this.stacks = stacks;
        this.from = from;
        this.to = to;
    }

    @Override
    public int size() {
        return to - from;
    }

    @Override
    public double[][] distances(int[][] centres) {
        int n = size();
        double[][] d = new double[n][centres.length];
        for (ExpertStack stack : stacks) {
            long cols = stack.cols();
            long rowsPerBlock = Math.max(1, Math.min(stack.rowsPerBlock(), BLOCK_BYTES / Double.BYTES / (n + 1) / cols));
            int len = Math.toIntExact(rowsPerBlock * cols);
            double[][] block = new double[n][len];
            double[] mean = new double[len];
            for (long r0 = 0; r0 < stack.rows(); r0 += rowsPerBlock) {
                long r1 = Math.min(stack.rows(), r0 + rowsPerBlock);
                int used = Math.toIntExact((r1 - r0) * cols);
                for (int p = 0; p < n; p++) {
                    INDArray rows = stack.rows(from + p, r0, r1);                  // [r1 - r0, cols] float32
                    FloatBuffer values = rows.data().asNio().order(ByteOrder.nativeOrder()).asFloatBuffer();
                    for (int j = 0; j < used; j++) {
                        block[p][j] = values.get(j);
                    }
                }
                KMeans.accumulate(block, used, centres, d, mean);
            }
        }
        return d;
    }
}
