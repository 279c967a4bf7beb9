package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * {@link Nd4jGroupedGemm} against a per-row float64 reference written with plain loops:
 * {@code y[r] = x[r] · W_{g(r)}ᵀ} where g(r) is the group whose offset range holds r.
 */
class GroupedGemmTest {

    private static final double TOLERANCE = 1e-5;
    private final GroupedGemm gemm = new Nd4jGroupedGemm();

    private static float[] random(Random rnd, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) rnd.nextGaussian();
        }
        return a;
    }

    /** y [N, out] in float64 from x [N, in], w [G, out, in]. */
    private static double[] reference(float[] x, float[] w, int[] offsets, int in, int out) {
        int rows = offsets[offsets.length - 1];
        double[] y = new double[rows * out];
        for (int g = 0; g + 1 < offsets.length; g++) {
            for (int r = offsets[g]; r < offsets[g + 1]; r++) {
                for (int o = 0; o < out; o++) {
                    double s = 0;
                    for (int i = 0; i < in; i++) {
                        s += (double) x[r * in + i] * w[(g * out + o) * in + i];
                    }
                    y[r * out + o] = s;
                }
            }
        }
        return y;
    }

    /** Runs the kernel with y pre-filled with NaN and compares every element to the reference. */
    private void check(long seed, int in, int out, int[] offsets) {
        Random rnd = new Random(seed);
        int groups = offsets.length - 1;
        int rows = offsets[groups];
        float[] xs = random(rnd, rows * in);
        float[] ws = random(rnd, groups * out * in);
        INDArray x = Nd4j.create(xs, new long[] {rows, in}, 'c');            // [N, in]
        INDArray w = Nd4j.create(ws, new long[] {groups, out, in}, 'c');     // [G, out, in]
        INDArray y = Nd4j.valueArrayOf(new long[] {rows, out}, Float.NaN, DataType.FLOAT); // [N, out]

        gemm.forward(x, w, offsets, y);

        double[] expected = reference(xs, ws, offsets, in, out);
        float[] actual = y.dup('c').data().asFloat();
        double maxRel = 0;
        for (int k = 0; k < expected.length; k++) {
            int row = k / out;
            assertFalse(Float.isNaN(actual[k]), "y[" + row + ", " + (k % out) + "] was not written");
            double rel = Math.abs(actual[k] - expected[k]) / Math.max(1.0, Math.abs(expected[k]));
            maxRel = Math.max(maxRel, rel);
        }
        double worst = maxRel;
        assertTrue(worst <= TOLERANCE, () -> "max relative error " + worst + " > " + TOLERANCE
                + " for offsets " + java.util.Arrays.toString(offsets));
    }

    @Test
    void ordinaryGroups() {
        check(1, 16, 12, new int[] {0, 3, 7, 12, 20});
    }

    @Test
    void emptyFirstGroup() {
        check(2, 8, 6, new int[] {0, 0, 5, 9});
    }

    @Test
    void emptyMiddleGroups() {
        check(3, 8, 6, new int[] {0, 4, 4, 4, 9, 11});
    }

    @Test
    void emptyLastGroup() {
        check(4, 8, 6, new int[] {0, 2, 7, 7});
    }

    @Test
    void emptyFirstMiddleAndLast() {
        check(5, 10, 7, new int[] {0, 0, 3, 3, 8, 8});
    }

    @Test
    void singleRow() {
        check(6, 9, 5, new int[] {0, 0, 1, 1});
    }

    @Test
    void allRowsInOneGroup() {
        check(7, 12, 10, new int[] {0, 0, 0, 25, 25});
    }

    @Test
    void oneRowPerGroup() {
        check(8, 6, 4, new int[] {0, 1, 2, 3, 4, 5});
    }

    @Test
    void wideAndTall() {
        check(9, 128, 96, new int[] {0, 17, 40, 40, 64});
    }

    @Test
    void inDimensionMismatchNamesShapes() {
        INDArray x = Nd4j.zeros(DataType.FLOAT, 4, 8);      // [N, in=8]
        INDArray w = Nd4j.zeros(DataType.FLOAT, 2, 6, 7);   // [G, out, in=7]
        INDArray y = Nd4j.zeros(DataType.FLOAT, 4, 6);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gemm.forward(x, w, new int[] {0, 2, 4}, y));
        assertMentionsShapes(e, "[4,8]", "[2,6,7]", "[4,6]");
    }

    @Test
    void groupCountMismatchNamesShapes() {
        INDArray x = Nd4j.zeros(DataType.FLOAT, 4, 8);
        INDArray w = Nd4j.zeros(DataType.FLOAT, 3, 6, 8);   // 3 weights, 2 groups
        INDArray y = Nd4j.zeros(DataType.FLOAT, 4, 6);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gemm.forward(x, w, new int[] {0, 2, 4}, y));
        assertMentionsShapes(e, "[3,6,8]", "groups 2");
    }

    @Test
    void outputShapeMismatchNamesShapes() {
        INDArray x = Nd4j.zeros(DataType.FLOAT, 4, 8);
        INDArray w = Nd4j.zeros(DataType.FLOAT, 2, 6, 8);
        INDArray y = Nd4j.zeros(DataType.FLOAT, 4, 5);      // out should be 6
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gemm.forward(x, w, new int[] {0, 2, 4}, y));
        assertMentionsShapes(e, "[4,5]", "[2,6,8]");
    }

    @Test
    void offsetsNotCoveringAllRows() {
        INDArray x = Nd4j.zeros(DataType.FLOAT, 4, 8);
        INDArray w = Nd4j.zeros(DataType.FLOAT, 2, 6, 8);
        INDArray y = Nd4j.zeros(DataType.FLOAT, 4, 6);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gemm.forward(x, w, new int[] {0, 2, 3}, y));
        assertMentionsShapes(e, "[4,8]", "ending at row 3");
    }

    @Test
    void offsetsNotStartingAtZeroAreRejected() {
        INDArray x = Nd4j.zeros(DataType.FLOAT, 4, 8);
        INDArray w = Nd4j.zeros(DataType.FLOAT, 2, 6, 8);
        INDArray y = Nd4j.zeros(DataType.FLOAT, 4, 6);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gemm.forward(x, w, new int[] {1, 2, 4}, y));
        assertTrue(e.getMessage().contains("[1, 2, 4]"), e.getMessage());
    }

    @Test
    void decreasingOffsetsAreRejected() {
        INDArray x = Nd4j.zeros(DataType.FLOAT, 4, 8);
        INDArray w = Nd4j.zeros(DataType.FLOAT, 3, 6, 8);
        INDArray y = Nd4j.zeros(DataType.FLOAT, 4, 6);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gemm.forward(x, w, new int[] {0, 3, 2, 4}, y));
        assertTrue(e.getMessage().contains("[0, 3, 2, 4]"), e.getMessage());
    }

    /** shapeInfoToString prints "Shape: [4,8]"-style text; compare with spaces removed. */
    private static void assertMentionsShapes(Exception e, String... parts) {
        String m = e.getMessage().replace(" ", "");
        for (String p : parts) {
            assertTrue(m.contains(p.replace(" ", "")), () -> "message \"" + e.getMessage() + "\" should mention " + p);
        }
    }
}
