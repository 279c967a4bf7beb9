package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Every {@link GroupedGemm} (ND4J sequential, ND4J over 2 and 3 threads, the per-expert loop, the naive dense
 * one) against a float64 reference written with plain loops over the same (rounded) inputs, for the three
 * products, with and without accumulation, in float32 (≤ 1e-5 relative) and float64 (≤ 1e-12 relative).
 * Relative error is |actual − expected| / max(1, |expected|) per element. Outputs start as NaN when they are
 * to be overwritten (so an unwritten element fails) and as random values when they are accumulated into.
 */
class GroupedGemmAgreementTest {

    enum Impl {
        ND4J_SEQUENTIAL(new Nd4jGroupedGemm()),
        ND4J_2_THREADS(new Nd4jGroupedGemm(2)),
        ND4J_3_THREADS(new Nd4jGroupedGemm(3)),
        LOOP(new LoopGroupedGemm()),
        NAIVE(new NaiveGroupedGemm());

        final GroupedGemm gemm;

        Impl(GroupedGemm gemm) {
            this.gemm = gemm;
        }
    }

    enum Op { FORWARD, BACKWARD_INPUT, BACKWARD_WEIGHT }

    /** Routing shapes: name, in, out, offsets [G+1]. */
    record Layout(String name, int in, int out, int[] offsets) {
        @Override
        public String toString() {
            return name + " " + Arrays.toString(offsets);
        }
    }

    static List<Layout> layouts() {
        List<Layout> l = new ArrayList<>();
        l.add(new Layout("ordinary", 16, 12, new int[] {0, 3, 7, 12, 20}));
        l.add(new Layout("empty first", 8, 6, new int[] {0, 0, 5, 9}));
        l.add(new Layout("empty middle", 8, 6, new int[] {0, 4, 4, 4, 9, 11}));
        l.add(new Layout("empty last", 8, 6, new int[] {0, 2, 7, 7}));
        l.add(new Layout("empty first, middle, last", 10, 7, new int[] {0, 0, 3, 3, 8, 8}));
        l.add(new Layout("single row among empty groups", 9, 5, new int[] {0, 0, 1, 1}));
        l.add(new Layout("single row, single group", 9, 5, new int[] {0, 1}));
        l.add(new Layout("every row in one group", 12, 10, new int[] {0, 0, 0, 25, 25}));
        l.add(new Layout("as many groups as rows", 6, 4, new int[] {0, 1, 2, 3, 4, 5, 6, 7}));
        l.add(new Layout("wide and tall", 128, 96, new int[] {0, 17, 40, 40, 64}));
        l.add(new Layout("rank-like narrow out", 64, 4, new int[] {0, 5, 5, 30, 31, 50}));
        return l;
    }

    static Stream<Arguments> cases() {
        List<Arguments> a = new ArrayList<>();
        for (Impl impl : Impl.values()) {
            for (Op op : Op.values()) {
                for (DataType type : new DataType[] {DataType.FLOAT, DataType.DOUBLE}) {
                    for (boolean accumulate : new boolean[] {false, true}) {
                        for (Layout layout : layouts()) {
                            a.add(Arguments.of(impl, op, type, accumulate, layout));
                        }
                    }
                }
            }
        }
        return a.stream();
    }

    @ParameterizedTest(name = "{0} {1} {2} accumulate={3} {4}")
    @MethodSource("cases")
    void agreesWithPlainLoops(Impl impl, Op op, DataType type, boolean accumulate, Layout layout) {
        int[] offsets = layout.offsets();
        int groups = offsets.length - 1;
        int rows = offsets[groups];
        int in = layout.in();
        int out = layout.out();
        Random rnd = new Random(31L * layout.name().hashCode() + op.ordinal());
        INDArray w = random(rnd, type, groups, out, in);                              // [G, out, in]
        INDArray x = random(rnd, type, rows, in);                                     // [N, in]
        INDArray dy = random(rnd, type, rows, out);                                   // [N, out]

        INDArray result;
        double[] expected;
        switch (op) {
            case FORWARD -> {
                result = start(rnd, type, accumulate, rows, out);                     // y [N, out]
                expected = plus(accumulate, result, forward(x, w, offsets, in, out));
                impl.gemm.forward(x, w, offsets, result, accumulate);
            }
            case BACKWARD_INPUT -> {
                result = start(rnd, type, accumulate, rows, in);                      // dx [N, in]
                expected = plus(accumulate, result, backwardInput(dy, w, offsets, in, out));
                impl.gemm.backwardInput(dy, w, offsets, result, accumulate);
            }
            default -> {
                result = start(rnd, type, accumulate, groups, out, in);               // dw [G, out, in]
                expected = plus(accumulate, result, backwardWeight(dy, x, offsets, in, out));
                impl.gemm.backwardWeight(dy, x, offsets, result, accumulate);
            }
        }

        double tolerance = type == DataType.FLOAT ? 1e-5 : 1e-12;
        double[] actual = values(result);
        double worst = 0;
        for (int k = 0; k < expected.length; k++) {
            int at = k;
            assertFalse(Double.isNaN(actual[k]), () -> "element " + at + " was not written");
            worst = Math.max(worst, Math.abs(actual[k] - expected[k]) / Math.max(1.0, Math.abs(expected[k])));
        }
        double maxRel = worst;
        assertTrue(maxRel <= tolerance, () -> impl + " " + op + " " + type + ": max relative error " + maxRel
                + " > " + tolerance);
    }

    /** The thread count changes who computes a group, never how: results are bit-identical. */
    @Test
    void parallelIsBitIdenticalToSequentialOnManyUnevenGroups() {
        Random rnd = new Random(7);
        int groups = 64;
        int[] offsets = new int[groups + 1];
        for (int g = 0; g < groups; g++) {
            offsets[g + 1] = offsets[g] + (g % 9 == 0 ? 0 : rnd.nextInt(40));         // some empty, uneven
        }
        int rows = offsets[groups];
        int in = 48;
        int out = 24;
        INDArray w = random(rnd, DataType.FLOAT, groups, out, in);
        INDArray x = random(rnd, DataType.FLOAT, rows, in);
        INDArray dy = random(rnd, DataType.FLOAT, rows, out);
        GroupedGemm seq = new Nd4jGroupedGemm();
        for (int threads : new int[] {2, 4}) {
            GroupedGemm par = new Nd4jGroupedGemm(threads);
            for (int repeat = 0; repeat < 3; repeat++) {
                INDArray y1 = Nd4j.create(DataType.FLOAT, rows, out);
                INDArray y2 = Nd4j.create(DataType.FLOAT, rows, out);
                seq.forward(x, w, offsets, y1);
                par.forward(x, w, offsets, y2);
                assertArrayEquals(y1.data().asFloat(), y2.data().asFloat());
                INDArray dx1 = Nd4j.create(DataType.FLOAT, rows, in);
                INDArray dx2 = Nd4j.create(DataType.FLOAT, rows, in);
                seq.backwardInput(dy, w, offsets, dx1, false);
                par.backwardInput(dy, w, offsets, dx2, false);
                assertArrayEquals(dx1.data().asFloat(), dx2.data().asFloat());
                INDArray dw1 = Nd4j.valueArrayOf(new long[] {groups, out, in}, Float.NaN, DataType.FLOAT);
                INDArray dw2 = Nd4j.valueArrayOf(new long[] {groups, out, in}, Float.NaN, DataType.FLOAT);
                seq.backwardWeight(dy, x, offsets, dw1, false);
                par.backwardWeight(dy, x, offsets, dw2, false);
                assertArrayEquals(dw1.data().asFloat(), dw2.data().asFloat());
            }
        }
    }

    /**
     * Operands and results that are views (a column slice, so rows are not contiguous; an offset row range) or
     * 'f' order give the same bits as their 'c' copies, and only the view's own elements change.
     */
    @Test
    void viewsAndFortranOrderGiveTheSameBitsAsCopies() {
        Random rnd = new Random(11);
        int[] offsets = {0, 3, 3, 9, 14};
        int groups = offsets.length - 1;
        int rows = offsets[groups];
        int in = 10;
        int out = 7;
        for (boolean accumulate : new boolean[] {false, true}) {
            INDArray xWide = random(rnd, DataType.FLOAT, rows, in + 5);
            INDArray x = xWide.get(NDArrayIndex.all(), NDArrayIndex.interval(2, 2 + in));   // [N, in] view
            INDArray w = random(rnd, DataType.FLOAT, groups, out, in).dup('f');             // [G, out, in] 'f'
            INDArray dyTall = random(rnd, DataType.FLOAT, rows + 4, out);
            INDArray dy = dyTall.get(NDArrayIndex.interval(4, 4 + rows), NDArrayIndex.all()); // [N, out] offset
            INDArray yWide = random(rnd, DataType.FLOAT, rows, out + 3);
            INDArray y = yWide.get(NDArrayIndex.all(), NDArrayIndex.interval(1, 1 + out));   // [N, out] view
            INDArray dw = random(rnd, DataType.FLOAT, groups, out, in).dup('f');             // [G, out, in] 'f'
            INDArray dx = random(rnd, DataType.FLOAT, rows, in).dup('f');                    // [N, in] 'f'
            GroupedGemm gemm = new Nd4jGroupedGemm(2);

            INDArray yCopy = y.dup('c');
            INDArray dwCopy = dw.dup('c');
            INDArray dxCopy = dx.dup('c');
            gemm.forward(x.dup('c'), w.dup('c'), offsets, yCopy, accumulate);
            gemm.backwardWeight(dy.dup('c'), x.dup('c'), offsets, dwCopy, accumulate);
            gemm.backwardInput(dy.dup('c'), w.dup('c'), offsets, dxCopy, accumulate);
            INDArray untouched = yWide.get(NDArrayIndex.all(), NDArrayIndex.interval(0, 1)).dup('c');
            gemm.forward(x, w, offsets, y, accumulate);
            gemm.backwardWeight(dy, x, offsets, dw, accumulate);
            gemm.backwardInput(dy, w, offsets, dx, accumulate);

            assertArrayEquals(yCopy.data().asFloat(), y.dup('c').data().asFloat(), "forward into a view");
            assertArrayEquals(dwCopy.data().asFloat(), dw.dup('c').data().asFloat(), "weight gradient, 'f' order");
            assertArrayEquals(dxCopy.data().asFloat(), dx.dup('c').data().asFloat(), "input gradient, 'f' order");
            assertArrayEquals(untouched.data().asFloat(),
                    yWide.get(NDArrayIndex.all(), NDArrayIndex.interval(0, 1)).dup('c').data().asFloat(),
                    "columns outside the view");
        }
    }

    @Test
    void dealBalancesRowsAndCoversEveryGroupOnce() {
        int[] offsets = {0, 100, 100, 130, 160, 190, 220, 221};     // sizes 100, 0, 30, 30, 30, 30, 1
        int[][] shares = Nd4jGroupedGemm.deal(offsets, false, 2);
        // largest first, each to the lighter share (+1 per group): 0 | 2, 3, 4, 5 | then 6 to the 101-row share
        assertArrayEquals(new int[] {0, 6}, shares[0]);             // 101 rows
        assertArrayEquals(new int[] {2, 3, 4, 5}, shares[1]);       // 120 rows; empty group 1 skipped
        int[][] withEmpty = Nd4jGroupedGemm.deal(offsets, true, 3);
        int dealt = 0;
        for (int[] s : withEmpty) {
            dealt += s.length;
        }
        assertEquals(7, dealt);
    }

    @Test
    void parallelFailureReachesTheCaller() {
        GroupedGemm par = new Nd4jGroupedGemm(2);
        INDArray x = Nd4j.zeros(DataType.FLOAT, 4, 8);
        INDArray w = Nd4j.zeros(DataType.FLOAT, 2, 6, 7);
        INDArray y = Nd4j.zeros(DataType.FLOAT, 4, 6);
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> par.forward(x, w, new int[] {0, 2, 4}, y));
        assertTrue(e.getMessage().contains("forward shapes disagree"), e.getMessage());
    }

    // ---- float64 reference with plain loops -------------------------------------------------------------

    /** y [N, out]: y[r] = x[r] · W_{g(r)}ᵀ. */
    private static double[] forward(INDArray x, INDArray w, int[] offsets, int in, int out) {
        double[] xs = values(x);
        double[] ws = values(w);
        double[] y = new double[offsets[offsets.length - 1] * out];
        for (int g = 0; g + 1 < offsets.length; g++) {
            for (int r = offsets[g]; r < offsets[g + 1]; r++) {
                for (int o = 0; o < out; o++) {
                    double s = 0;
                    for (int i = 0; i < in; i++) {
                        s += xs[r * in + i] * ws[(g * out + o) * in + i];
                    }
                    y[r * out + o] = s;
                }
            }
        }
        return y;
    }

    /** dx [N, in]: dx[r] = dy[r] · W_{g(r)}. */
    private static double[] backwardInput(INDArray dy, INDArray w, int[] offsets, int in, int out) {
        double[] dys = values(dy);
        double[] ws = values(w);
        double[] dx = new double[offsets[offsets.length - 1] * in];
        for (int g = 0; g + 1 < offsets.length; g++) {
            for (int r = offsets[g]; r < offsets[g + 1]; r++) {
                for (int i = 0; i < in; i++) {
                    double s = 0;
                    for (int o = 0; o < out; o++) {
                        s += dys[r * out + o] * ws[(g * out + o) * in + i];
                    }
                    dx[r * in + i] = s;
                }
            }
        }
        return dx;
    }

    /** dw [G, out, in]: dW_g = Σ_{r in g} dy[r]ᵀ x[r]; zero for empty groups. */
    private static double[] backwardWeight(INDArray dy, INDArray x, int[] offsets, int in, int out) {
        double[] dys = values(dy);
        double[] xs = values(x);
        int groups = offsets.length - 1;
        double[] dw = new double[groups * out * in];
        for (int g = 0; g < groups; g++) {
            for (int o = 0; o < out; o++) {
                for (int i = 0; i < in; i++) {
                    double s = 0;
                    for (int r = offsets[g]; r < offsets[g + 1]; r++) {
                        s += dys[r * out + o] * xs[r * in + i];
                    }
                    dw[(g * out + o) * in + i] = s;
                }
            }
        }
        return dw;
    }

    private static double[] plus(boolean accumulate, INDArray start, double[] product) {
        if (!accumulate) {
            return product;
        }
        double[] s = values(start);
        for (int k = 0; k < s.length; k++) {
            s[k] += product[k];
        }
        return s;
    }

    private static INDArray random(Random rnd, DataType type, long... shape) {
        int n = (int) Arrays.stream(shape).reduce(1, (a, b) -> a * b);
        double[] v = new double[n];
        for (int k = 0; k < n; k++) {
            v[k] = rnd.nextGaussian();
        }
        return Nd4j.create(v, shape, 'c').castTo(type);
    }

    /** Random values to accumulate into, or NaN to be overwritten. */
    private static INDArray start(Random rnd, DataType type, boolean accumulate, long... shape) {
        return accumulate ? random(rnd, type, shape) : Nd4j.valueArrayOf(shape, Double.NaN, type);
    }

    private static double[] values(INDArray a) {
        return a.dup('c').data().asDouble();
    }
}
