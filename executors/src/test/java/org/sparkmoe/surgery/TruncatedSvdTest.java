package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TruncatedSvdTest {
    /** diag(3, 2, 1) padded to 4×3: rank 2 keeps 3 and 2, error² = 1. */
    @Test
    void diagonalByHand() {
        INDArray m = Nd4j.create(new double[][] {{3, 0, 0}, {0, 0, 1}, {0, 2, 0}, {0, 0, 0}});
        TruncatedSvd.Factors f = TruncatedSvd.of(m, 2);
        assertArrayEquals(new long[] {4, 2}, f.b().shape());
        assertArrayEquals(new long[] {2, 3}, f.a().shape());
        INDArray approx = f.b().mmul(f.a());
        INDArray expected = Nd4j.create(new double[][] {{3, 0, 0}, {0, 0, 0}, {0, 2, 0}, {0, 0, 0}});
        assertTrue(approx.sub(expected).amaxNumber().doubleValue() < 1e-12, approx.toString());
        assertEquals(1.0, f.tailSquared(), 1e-12);
    }

    /** A matrix of rank 3 is reproduced exactly at rank 3, and the error at rank 2 equals its tail. */
    @Test
    void exactAtItsRankAndTheTailIsTheError() {
        Random rnd = new Random(1);
        INDArray left = Nd4j.create(DataType.DOUBLE, 6, 3);
        INDArray right = Nd4j.create(DataType.DOUBLE, 3, 5);
        for (INDArray t : new INDArray[] {left, right}) {
            for (long i = 0; i < t.length(); i++) {
                t.putScalar(i, rnd.nextGaussian());
            }
        }
        INDArray m = left.mmul(right).castTo(DataType.FLOAT);
        TruncatedSvd.Factors full = TruncatedSvd.of(m, 3);
        assertTrue(full.b().mmul(full.a()).sub(m.castTo(DataType.DOUBLE)).amaxNumber().doubleValue() < 1e-5);
        assertEquals(0, full.tailSquared(), 1e-9);
        TruncatedSvd.Factors two = TruncatedSvd.of(m, 2);
        double err = two.b().mmul(two.a()).sub(m.castTo(DataType.DOUBLE)).norm2Number().doubleValue();
        assertEquals(err * err, two.tailSquared(), 1e-8 * (1 + err * err));
    }

    /** Wide and tall, small and past the native op's algorithm switch (16): B·A at rank R is the same best approximation. */
    @Test
    void wideAndTallMatricesOfAnySize() {
        Random rnd = new Random(2);
        for (int[] shape : new int[][] {{3, 5}, {20, 40}, {40, 20}, {64, 128}}) {
            INDArray m = Nd4j.create(DataType.DOUBLE, shape[0], shape[1]);
            for (long i = 0; i < m.length(); i++) {
                m.putScalar(i, rnd.nextGaussian());
            }
            int k = Math.min(shape[0], shape[1]);
            TruncatedSvd.Factors all = TruncatedSvd.of(m, k);
            assertTrue(all.b().mmul(all.a()).sub(m).amaxNumber().doubleValue() < 1e-9, java.util.Arrays.toString(shape));
            TruncatedSvd.Factors half = TruncatedSvd.of(m, k / 2);
            double err = half.b().mmul(half.a()).sub(m).norm2Number().doubleValue();
            assertEquals(err * err, half.tailSquared(), 1e-9 * err * err, java.util.Arrays.toString(shape));
        }
    }

    /**
     * Against the full SVD it replaced (ND4J's gesvd, jobu = jobvt = 'A', on the tall orientation; kept below as the
     * reference): on a random tall and a random wide matrix, the same singular values (B's column norms), the same
     * factors up to each triplet's sign, the same B·A and the same tail.
     */
    @Test
    void equalsTheFullSvdOnTallAndWideMatrices() {
        Random rnd = new Random(3);
        for (int[] shape : new int[][] {{300, 70}, {70, 300}}) {
            INDArray m = Nd4j.create(DataType.DOUBLE, shape[0], shape[1]);
            for (long i = 0; i < m.length(); i++) {
                m.putScalar(i, rnd.nextGaussian());
            }
            for (int rank : new int[] {1, 16, 70}) {
                String what = java.util.Arrays.toString(shape) + " rank " + rank;
                TruncatedSvd.Factors thin = TruncatedSvd.of(m, rank);
                TruncatedSvd.Factors full = fullSvd(m, rank);
                for (int j = 0; j < rank; j++) {
                    double sign = Math.signum(thin.a().getRow(j).mul(full.a().getRow(j)).sumNumber().doubleValue());
                    assertTrue(thin.a().getRow(j).sub(full.a().getRow(j).mul(sign)).amaxNumber().doubleValue() < 1e-9,
                            what + " A row " + j);
                    assertTrue(thin.b().getColumn(j).sub(full.b().getColumn(j).mul(sign)).amaxNumber().doubleValue()
                            < 1e-9, what + " B column " + j);
                }
                assertTrue(thin.b().mmul(thin.a()).sub(full.b().mmul(full.a())).amaxNumber().doubleValue() < 1e-9, what);
                assertEquals(full.tailSquared(), thin.tailSquared(), 1e-9 * (1 + full.tailSquared()), what);
            }
        }
    }

    /** The full SVD: LAPACK gesvd on the tall orientation with full U [rows, rows] and Vᵀ [cols, cols]. */
    static TruncatedSvd.Factors fullSvd(INDArray m, int rank) {
        long k = Math.min(m.size(0), m.size(1));
        boolean wide = m.size(0) < m.size(1);
        INDArray x = (wide ? m.transpose() : m).dup('f');                                       // [rows ≥ cols]
        INDArray s = Nd4j.create(DataType.DOUBLE, k);
        INDArray u = Nd4j.create(DataType.DOUBLE, new long[] {x.size(0), x.size(0)}, 'f');
        INDArray vt = Nd4j.create(DataType.DOUBLE, new long[] {x.size(1), x.size(1)}, 'f');
        Nd4j.getBlasWrapper().lapack().gesvd(x, s, u, vt);
        INDArray uR = u.get(NDArrayIndex.all(), NDArrayIndex.interval(0, rank));
        INDArray vR = vt.get(NDArrayIndex.interval(0, rank), NDArrayIndex.all()).transpose();
        INDArray sR = s.get(NDArrayIndex.interval(0, rank));
        double tail = 0;
        for (long j = rank; j < k; j++) {
            tail += s.getDouble(j) * s.getDouble(j);
        }
        return new TruncatedSvd.Factors((wide ? vR : uR).mulRowVector(sR).dup('c'), (wide ? uR : vR).transpose().dup('c'),
                tail);
    }

    @Test
    void rankOutOfRangeFails() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TruncatedSvd.of(Nd4j.zeros(DataType.FLOAT, 4, 3), 4));
        assertEquals("--rank must be in [1, 3] (the smaller side of a 4×3 projection), got 4", e.getMessage());
    }
}
