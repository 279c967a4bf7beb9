package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Times one truncated SVD of a random Gaussian [rows, cols] matrix in float64 (not a test: run by hand, see
 * docs/benchmarks.md): {@code thin} is {@link TruncatedSvd#of}, {@code full} the full gesvd it replaced
 * ({@link TruncatedSvdTest#fullSvd}). Arguments: thin|full rows cols rank.
 */
final class TruncatedSvdTiming {
    private TruncatedSvdTiming() {
    }

    public static void main(String[] args) {
        boolean full = args[0].equals("full");
        int rows = Integer.parseInt(args[1]);
        int cols = Integer.parseInt(args[2]);
        int rank = Integer.parseInt(args[3]);
        Nd4j.getRandom().setSeed(1);
        INDArray m = Nd4j.randn(DataType.DOUBLE, rows, cols);                                   // [rows, cols]
        long start = System.nanoTime();
        TruncatedSvd.Factors f = full ? TruncatedSvdTest.fullSvd(m, rank) : TruncatedSvd.of(m, rank);
        double seconds = (System.nanoTime() - start) / 1e9;
        System.out.printf("%s %d×%d rank %d: %.1f s, tail %.9e, σ_1 %.9e%n", args[0], rows, cols, rank, seconds,
                f.tailSquared(), f.b().getColumn(0).norm2Number().doubleValue());
    }
}
