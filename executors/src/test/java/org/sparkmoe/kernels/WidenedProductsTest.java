package org.sparkmoe.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.Mxfp4;

/**
 * Products with weights stored narrower than they compute (bf16/fp16 widened per tile) equal, bit for bit, the same
 * products with the weights' float32 widening, including matrices large enough to take several tiles; and the
 * tiled products agree with one untiled product. The same for MXFP4 experts (decoded per tile, every other stored row
 * as gpt-oss's gate) and for strided float32 views BLAS cannot take (gpt-oss's transposed, interleaved gate).
 */
class WidenedProductsTest {

    /** G matrices [out, in] of random values exactly representable in {@code narrow}, stored as {@code narrow}. */
    private static List<INDArray> weights(long seed, DataType narrow, int groups, int out, int in) {
        Nd4j.getRandom().setSeed(seed);
        List<INDArray> ws = new ArrayList<>();
        for (int g = 0; g < groups; g++) {
            ws.add(Nd4j.randn(DataType.FLOAT, out, in).muli(0.05).castTo(narrow));
        }
        return ws;
    }

    private static List<INDArray> widened(List<INDArray> ws) {
        return ws.stream().map(w -> w.castTo(DataType.FLOAT)).toList();
    }

    private static void assertBitIdentical(INDArray expected, INDArray actual, String what) {
        assertArrayEquals(expected.data().asFloat(), actual.data().asFloat(), what);
    }

    private static void assertClose(INDArray expected, INDArray actual, String what) {
        double largest = expected.amaxNumber().doubleValue();
        double worst = expected.sub(actual).amaxNumber().doubleValue();
        assertTrue(worst <= 1e-5 * Math.max(1, largest), what + ": worst difference " + worst + ", largest " + largest);
    }

    private static void groupedAgree(DataType narrow, int groups, int out, int in, int[] offsets) {
        List<INDArray> stored = weights(7 + out, narrow, groups, out, in);
        List<INDArray> wide = widened(stored);
        int rows = offsets[groups];
        INDArray x = Nd4j.randn(DataType.FLOAT, rows, in);
        INDArray dy = Nd4j.randn(DataType.FLOAT, rows, out);
        GroupedGemm gemm = new Nd4jGroupedGemm();

        INDArray yNarrow = Nd4j.zeros(DataType.FLOAT, rows, out);
        INDArray yWide = Nd4j.zeros(DataType.FLOAT, rows, out);
        gemm.forward(x, WeightStack.of(stored), offsets, yNarrow);
        gemm.forward(x, WeightStack.of(wide), offsets, yWide);
        assertBitIdentical(yWide, yNarrow, "forward");
        INDArray dxNarrow = Nd4j.zeros(DataType.FLOAT, rows, in);
        INDArray dxWide = Nd4j.zeros(DataType.FLOAT, rows, in);
        gemm.backwardInput(dy, WeightStack.of(stored), offsets, dxNarrow, false);
        gemm.backwardInput(dy, WeightStack.of(wide), offsets, dxWide, false);
        assertBitIdentical(dxWide, dxNarrow, "backwardInput");

        INDArray yLoop = Nd4j.zeros(DataType.FLOAT, rows, out);
        INDArray dxLoop = Nd4j.zeros(DataType.FLOAT, rows, in);
        new LoopGroupedGemm().forward(x, WeightStack.of(wide), offsets, yLoop);
        new LoopGroupedGemm().backwardInput(dy, WeightStack.of(wide), offsets, dxLoop, false);
        assertClose(yLoop, yNarrow, "tiled forward against one product per group");
        assertClose(dxLoop, dxNarrow, "tiled backwardInput against one product per group");
    }

    /** Random MXFP4 bytes for G experts of [2·out, in] stored rows; the even rows are each expert's matrix. */
    private static List<Mxfp4> mxfp4(long seed, int groups, int out, int in) {
        java.util.Random rnd = new java.util.Random(seed);
        long storedRows = 2L * out;
        byte[] blocks = new byte[(int) (groups * storedRows * in / 2)];
        byte[] scales = new byte[(int) (groups * storedRows * in / Mxfp4.BLOCK)];
        rnd.nextBytes(blocks);
        for (int i = 0; i < scales.length; i++) {
            scales[i] = (byte) (127 - 8 + rnd.nextInt(10));                   // factors 2^-8 .. 2^1
        }
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(blocks).asReadOnlyBuffer();
        java.nio.ByteBuffer sc = java.nio.ByteBuffer.wrap(scales).asReadOnlyBuffer();
        List<Mxfp4> out2 = new ArrayList<>();
        for (int g = 0; g < groups; g++) {
            long first = g * storedRows;
            out2.add(new Mxfp4(b, sc, first * in / 2, first * in / Mxfp4.BLOCK, 2, out, in));
        }
        return out2;
    }

    private static void mxfp4Agree(int groups, int out, int in, int[] offsets) {
        List<Mxfp4> packed = mxfp4(5 + out, groups, out, in);
        List<INDArray> wide = packed.stream().map(m -> Nd4j.create(m.decode(), new long[] {out, in}, 'c')).toList();
        int rows = offsets[groups];
        INDArray x = Nd4j.randn(DataType.FLOAT, rows, in);
        INDArray dy = Nd4j.randn(DataType.FLOAT, rows, out);
        GroupedGemm gemm = new Nd4jGroupedGemm();
        INDArray yPacked = Nd4j.zeros(DataType.FLOAT, rows, out);
        INDArray yWide = Nd4j.zeros(DataType.FLOAT, rows, out);
        gemm.forward(x, WeightStack.ofMxfp4(packed), offsets, yPacked);
        gemm.forward(x, WeightStack.of(wide), offsets, yWide);
        assertBitIdentical(yWide, yPacked, "mxfp4 forward");
        INDArray dxPacked = Nd4j.zeros(DataType.FLOAT, rows, in);
        INDArray dxWide = Nd4j.zeros(DataType.FLOAT, rows, in);
        gemm.backwardInput(dy, WeightStack.ofMxfp4(packed), offsets, dxPacked, false);
        gemm.backwardInput(dy, WeightStack.of(wide), offsets, dxWide, false);
        assertBitIdentical(dxWide, dxPacked, "mxfp4 backwardInput");
        assertTrue(yPacked.amaxNumber().doubleValue() > 0, "a non-trivial product");
    }

    @Test
    void mxfp4ExpertsEqualTheirDecodingInOneTile() {
        mxfp4Agree(4, 24, 64, new int[] {0, 3, 3, 10, 13});
    }

    @Test
    void mxfp4ExpertsEqualTheirDecodingOverSeveralTiles() {
        // in = 2^16 columns: 64 rows per forward tile of 2^22 elements, so 160 rows take 3 tiles
        mxfp4Agree(2, 160, 1 << 16, new int[] {0, 2, 3});
    }

    /** gpt-oss's gate as FusedExperts sees it: every other column of a [D, 2I] matrix, transposed to [I, D]. */
    @Test
    void stridedFloatViewsEqualTheirCopies() {
        Nd4j.getRandom().setSeed(11);
        int d = 16;
        int i = 12;
        List<INDArray> views = new ArrayList<>();
        for (int g = 0; g < 3; g++) {
            INDArray fused = Nd4j.randn(DataType.FLOAT, d, 2 * i);
            views.add(fused.get(org.nd4j.linalg.indexing.NDArrayIndex.all(),
                    org.nd4j.linalg.indexing.NDArrayIndex.interval(0, 2, 2 * i)).transpose());
        }
        List<INDArray> copies = views.stream().map(v -> v.dup('c')).toList();
        int[] offsets = {0, 4, 4, 9};
        INDArray x = Nd4j.randn(DataType.FLOAT, 9, d);
        INDArray dy = Nd4j.randn(DataType.FLOAT, 9, i);
        GroupedGemm gemm = new Nd4jGroupedGemm();
        INDArray yView = Nd4j.zeros(DataType.FLOAT, 9, i);
        INDArray yCopy = Nd4j.zeros(DataType.FLOAT, 9, i);
        gemm.forward(x, WeightStack.of(views), offsets, yView);
        gemm.forward(x, WeightStack.of(copies), offsets, yCopy);
        assertBitIdentical(yCopy, yView, "strided forward");
        INDArray dxView = Nd4j.zeros(DataType.FLOAT, 9, d);
        INDArray dxCopy = Nd4j.zeros(DataType.FLOAT, 9, d);
        gemm.backwardInput(dy, WeightStack.of(views), offsets, dxView, false);
        gemm.backwardInput(dy, WeightStack.of(copies), offsets, dxCopy, false);
        assertBitIdentical(dxCopy, dxView, "strided backwardInput");
    }

    @Test
    void bf16ExpertsEqualTheirFloatWideningInOneTile() {
        groupedAgree(DataType.BFLOAT16, 4, 24, 16, new int[] {0, 3, 3, 10, 13});
    }

    @Test
    void fp16ExpertsEqualTheirFloatWideningInOneTile() {
        groupedAgree(DataType.HALF, 3, 20, 12, new int[] {0, 0, 5, 9});
    }

    @Test
    void bf16ExpertsEqualTheirFloatWideningAcrossTiles() {
        int in = 4096;
        int out = (int) (Widened.rowsPerTile(in) + 76);     // two row tiles forward, two column tiles backward
        assertTrue(Widened.colsPerTile(out) < in);
        groupedAgree(DataType.BFLOAT16, 2, out, in, new int[] {0, 5, 9});
    }

    @Test
    void denseProductsWidenTheSameWay() {
        INDArray stored = weights(3, DataType.BFLOAT16, 1, 9, 6).get(0);
        INDArray wide = stored.castTo(DataType.FLOAT);
        INDArray x = Nd4j.randn(DataType.FLOAT, 5, 6);
        INDArray dy = Nd4j.randn(DataType.FLOAT, 5, 9);
        assertBitIdentical(Dense.linear(x, wide), Dense.linear(x, stored), "linear");
        assertBitIdentical(Dense.linearBackward(dy, wide), Dense.linearBackward(dy, stored), "linearBackward");
        INDArray acc = Nd4j.ones(DataType.FLOAT, 5, 6);
        Dense.linearBackward(dy, stored, acc, true);
        assertClose(Nd4j.gemm(dy, wide, false, false).addi(1.0), acc, "accumulated linearBackward");
        assertEquals(DataType.FLOAT, Dense.linear(x, stored).dataType());
    }
}
