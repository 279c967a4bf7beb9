package org.sparkmoe.bench;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The yardstick: one dense float32 GEMM [M, K] · [K, C] with (about) a given FLOP count, C = flops / (2·M·K),
 * so its shape is as close as possible to the grouped work it is compared with (same rows, same inner size).
 * It runs with as many BLAS threads as cores, whatever the caller's setting, so both sides use the whole machine.
 */
public final class DenseReference {
    private DenseReference() {
    }

    /** Median ms of one dense GEMM with {@code flops} FLOPs (rounded to whole columns) on M rows of inner size K. */
    public static double medianMs(int m, int k, double flops, int repeats) {
        int cols = columns(m, k, flops);
        INDArray a = Nd4j.rand(DataType.FLOAT, m, k);            // [M, K]
        INDArray b = Nd4j.rand(DataType.FLOAT, cols, k);         // [C, K], used transposed like a Linear weight
        INDArray c = Nd4j.create(DataType.FLOAT, m, cols);       // [M, C]
        double ms = BlasThreads.onAllCores(
                () -> Stopwatch.medianMs(2, repeats, () -> Nd4j.gemm(a, b, c, false, true, 1.0, 0.0)));
        return ms * flops / (2.0 * m * k * cols);                // rescale the rounding of C away
    }

    static int columns(int m, int k, double flops) {
        return (int) Math.max(1, Math.round(flops / (2.0 * m * k)));
    }
}
