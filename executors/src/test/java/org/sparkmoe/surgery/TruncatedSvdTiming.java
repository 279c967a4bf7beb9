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
        java.util.Random rnd = new java.util.Random(1);
        double[] values = new double[Math.multiplyExact(rows, cols)];
        for (int i = 0; i < values.length; i++) {
            values[i] = rnd.nextGaussian();
        }
        INDArray m = Nd4j.create(values, new long[] {rows, cols}, DataType.DOUBLE);             // [rows, cols]
        values = null;
        long start = System.nanoTime();
        TruncatedSvd.Factors f = full ? TruncatedSvdTest.fullSvd(m, rank) : TruncatedSvd.of(m, rank);
        double seconds = (System.nanoTime() - start) / 1e9;
        double frobenius = m.norm2Number().doubleValue();
        System.out.printf("%s %d×%d rank %d: %.1f s, ‖M‖² %.9e, tail %.9e, σ_1 %.9e%n", args[0], rows, cols, rank,
                seconds, frobenius * frobenius, f.tailSquared(), f.b().getColumn(0).norm2Number().doubleValue());
    }
}
