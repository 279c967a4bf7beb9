package org.sparkmoe.kernels;

import java.util.EnumMap;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.Mxfp4;
import org.sparkmoe.io.Fp8BlockMatrix;

/**
 * Products with weights kept in their stored type. A weight matrix W [out, in] enters a product in tiles: blocks of
 * whole rows for {@code x·Wᵀ} (every output column still sums over all of {@code in} in one BLAS call) and blocks of
 * whole columns for {@code dy·W} (every output column sums over all of {@code out}). A tile of weights already in the
 * product's type is used where it lies; any other tile (bf16, fp16 from a mapped checkpoint) is widened into this
 * thread's scratch first (exactly: every bf16/fp16 value is a float; FP8 block-quantized weights are dequantized, see
 * {@link Fp8BlockMatrix}). The tiling depends only on the shape, never on the stored type, so a bf16 checkpoint and
 * its float32 widening give bit-identical products. An MXFP4 matrix (gpt-oss's experts) is decoded into the same
 * scratch, exactly (every MXFP4 value is a float).
 */
final class Widened {
    /** Elements in one tile: bounds each thread's scratch at 16 MB of floats. */
    static final long TILE_ELEMENTS = 1L << 22;

    /** This thread's decoded MXFP4 values, before they enter the scratch. */
    private static final ThreadLocal<float[]> DECODED = ThreadLocal.withInitial(() -> new float[0]);

    private static final ThreadLocal<Map<DataType, INDArray>> SCRATCH = ThreadLocal.withInitial(
            () -> new EnumMap<>(DataType.class));

    private Widened() {
    }

    /** Rows of W [·, cols] per tile of {@code x·Wᵀ}. */
    static long rowsPerTile(long cols) {
        return Math.max(1, TILE_ELEMENTS / Math.max(1, cols));
    }

    /** Columns of W [rows, ·] per tile of {@code dy·W}. */
    static long colsPerTile(long rows) {
        return Math.max(1, TILE_ELEMENTS / Math.max(1, rows));
    }

    /**
     * Rows {@code r0..r1-1}, columns {@code c0..c1-1} of {@code w} [out, in] (stored in another type than
     * {@code compute}) widened into this thread's scratch: a 'c'-order [r1-r0, c1-c0] matrix valid until the thread's
     * next call.
     */
    static BlasMatrices widen(WeightStack stack, int g, long r0, long r1, long c0, long c1, DataType compute) {
        long rows = r1 - r0;
        long cols = c1 - c0;
        INDArray scratch = scratch(compute, rows * cols);
        INDArray tile = Nd4j.create(scratch.data(), new long[] {rows, cols}, new long[] {cols, 1}, 0, 'c', compute);
        widenInto(stack, g, r0, r1, c0, c1, tile);
        return BlasMatrices.of(tile);
    }

    /**
     * Rows {@code r0..r1-1}, columns {@code c0..c1-1} of {@code w} [out, in] widened (MXFP4 decoded, FP8 dequantized)
     * into {@code tile}, a whole 'c'-order [r1-r0, c1-c0] FLOAT or DOUBLE array at offset 0.
     */
    static void widenInto(WeightStack stack, int g, long r0, long r1, long c0, long c1, INDArray tile) {
        long rows = r1 - r0;
        long cols = c1 - c0;
        Mxfp4 packed = stack.packed(g);
        if (packed != null) {
            float[] values = DECODED.get();
            if (values.length < rows * cols) {
                values = new float[(int) Math.max(rows * cols, Math.min(TILE_ELEMENTS, 1L << 16))];
                DECODED.set(values);
            }
            packed.decode(r0, r1, c0, c1, values, 0);
            if (tile.dataType() == DataType.FLOAT) {
                tile.data().asNio().order(java.nio.ByteOrder.nativeOrder()).asFloatBuffer()
                        .put(values, 0, (int) (rows * cols));
            } else {
                tile.assign(Nd4j.create(java.util.Arrays.copyOf(values, (int) (rows * cols)), new long[] {rows, cols},
                        'c'));
            }
            return;
        }
        INDArray w = stack.matrix(g);
        if (w instanceof Fp8BlockMatrix fp8) {
            fp8.dequantize(r0, r1, c0, c1, tile);
            return;
        }
        INDArray source = r0 == 0 && r1 == w.size(0) && c0 == 0 && c1 == w.size(1) ? w
                : w.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.interval(c0, c1));
        tile.assign(source);
    }

    private static INDArray scratch(DataType type, long elements) {
        Map<DataType, INDArray> mine = SCRATCH.get();
        INDArray s = mine.get(type);
        if (s == null || s.length() < elements) {
            try (MemoryWorkspace outside = StepWorkspace.outside()) {        // kept across steps
                s = Nd4j.createUninitialized(type, new long[] {Math.max(elements, Math.min(TILE_ELEMENTS, 1L << 16))},
                        'c');
            }
            mine.put(type, s);
        }
        return s;
    }
}
