package org.sparkmoe.kernels;

import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.Mxfp4;
import org.sparkmoe.io.Fp8BlockMatrix;

/**
 * G weight matrices of one shape [out, in] (Hugging Face Linear layout) and one element type, the weight operand of
 * a {@link GroupedGemm}: either one stacked array [G, out, in] (LoRA factors, weights built in memory) or one array
 * per group (expert weights memory-mapped from a checkpoint, where the E experts of a projection are separate
 * tensors at no regular distance from each other). A per-group matrix may be any strided view (gpt-oss's gate and up
 * are every other column of its fused [D, 2I] tensor, seen transposed): a product takes it where BLAS can, else
 * copies it into scratch tile by tile ({@link Widened}), never whole.
 *
 * <p>The element type is what the weights are stored in: FLOAT or DOUBLE (used as they are by a product of the
 * same type), BFLOAT16/HALF, widened per use (see {@link Widened}), MXFP4 (gpt-oss's released experts, reported as
 * UINT8: blocks and scales, {@link Mxfp4}), decoded per use tile by tile into the same scratch, or FP8
 * block-quantized matrices ({@link Fp8BlockMatrix}, UINT8 codes), dequantized per use the same way. Immutable.
 */
public final class WeightStack {
    /** Bytes of float32 scratch one thread widens stored (bf16, fp16) tiles into: what each task slot adds. */
    public static final long SCRATCH_BYTES_PER_THREAD = Widened.TILE_ELEMENTS * Float.BYTES;

    private static final List<DataType> STORED = List.of(DataType.FLOAT, DataType.DOUBLE, DataType.BFLOAT16,
            DataType.HALF);

    private final INDArray stacked;      // [G, out, in], or null
    private final INDArray[] matrices;   // G × [out, in], or null
    private final Mxfp4[] packed;        // G MXFP4 matrices [out, in], or null
    private final int groups;
    private final long rows;
    private final long cols;
    private final DataType dataType;
    private volatile BlasMatrices[] blas;  // as BLAS sees the stored arrays: 1 (stacked) or G, made on first use

    private WeightStack(INDArray stacked, INDArray[] matrices, Mxfp4[] packed, int groups, long rows, long cols,
                        DataType type) {
        this.stacked = stacked;
        this.matrices = matrices;
        this.packed = packed;
        this.groups = groups;
        this.rows = rows;
        this.cols = cols;
        this.dataType = type;
    }

    /** The G matrices of {@code w} [G, out, in]; no copy. */
    public static WeightStack of(INDArray w) {
        if (w.rank() != 3) {
            throw new IllegalArgumentException("stacked weights must be [G, out, in], got " + Arrays.toString(w.shape()));
        }
        checkType(w);
        return new WeightStack(w, null, null, (int) w.size(0), w.size(1), w.size(2), w.dataType());
    }

    /** One matrix [out, in] per group, all of one shape and type; no copy. */
    public static WeightStack of(List<INDArray> perGroup) {
        if (perGroup.isEmpty()) {
            throw new IllegalArgumentException("a weight stack needs at least one matrix");
        }
        INDArray first = perGroup.get(0);
        for (INDArray m : perGroup) {
            if (m.rank() != 2 || !Arrays.equals(m.shape(), first.shape()) || m.dataType() != first.dataType()) {
                throw new IllegalArgumentException("per-group weights disagree: " + Arrays.toString(m.shape()) + " "
                        + m.dataType() + " against " + Arrays.toString(first.shape()) + " " + first.dataType());
            }
        }
        checkType(first);
        return new WeightStack(null, perGroup.toArray(new INDArray[0]), null, perGroup.size(), first.size(0),
                first.size(1), first.dataType());
    }

    /** One MXFP4 matrix [out, in] per group (views of a checkpoint's blocks and scales), all of one shape; no copy. */
    public static WeightStack ofMxfp4(List<Mxfp4> perGroup) {
        if (perGroup.isEmpty()) {
            throw new IllegalArgumentException("a weight stack needs at least one matrix");
        }
        Mxfp4 first = perGroup.get(0);
        for (Mxfp4 m : perGroup) {
            if (m.rows() != first.rows() || m.cols() != first.cols()) {
                throw new IllegalArgumentException("per-group MXFP4 weights disagree: [" + m.rows() + ", " + m.cols()
                        + "] against [" + first.rows() + ", " + first.cols() + "]");
            }
        }
        return new WeightStack(null, null, perGroup.toArray(new Mxfp4[0]), perGroup.size(), first.rows(),
                first.cols(), DataType.UINT8);
    }

    private static void checkType(INDArray w) {
        if (!STORED.contains(w.dataType()) && !(w instanceof Fp8BlockMatrix)) {
            throw new IllegalArgumentException("weights must be one of " + STORED + ", got " + w.dataType());
        }
    }

    /** G. */
    public int groups() {
        return groups;
    }

    /** out. */
    public long rows() {
        return rows;
    }

    /** in. */
    public long cols() {
        return cols;
    }

    /** [G, out, in]. */
    public long[] shape() {
        return new long[] {groups, rows, cols};
    }

    /** The stored element type; UINT8 for MXFP4. */
    public DataType dataType() {
        return dataType;
    }

    /** The type products with these weights compute in: DOUBLE for DOUBLE weights, else FLOAT. */
    public DataType computeType() {
        return dataType == DataType.DOUBLE ? DataType.DOUBLE : DataType.FLOAT;
    }

    /** Matrix g [out, in], a view (no copy); of an MXFP4 stack a new float32 array (one matrix decoded). */
    public INDArray matrix(int g) {
        if (packed != null) {
            return Nd4j.create(packed[g].decode(), new long[] {rows, cols}, 'c');
        }
        return stacked != null ? stacked.slice(g) : matrices[g];
    }

    /** Matrix g of an MXFP4 stack, else null. */
    Mxfp4 packed(int g) {
        return packed == null ? null : packed[g];
    }

    /** The stacked array when this stack was built from one, else null. */
    INDArray stacked() {
        return stacked;
    }

    /**
     * Matrix g as BLAS sees it where it lies (stored FLOAT or DOUBLE): the stacked matrices (index g) or g's own
     * (index 0); null when BLAS cannot take its layout (a strided view: products copy it per tile).
     */
    BlasMatrices blas(int g) {
        if (packed != null) {
            return null;
        }
        BlasMatrices[] made = blas;
        if (made == null) {
            made = stacked != null ? new BlasMatrices[] {direct(stacked)} : new BlasMatrices[groups];
            for (int i = 0; stacked == null && i < groups; i++) {
                made[i] = direct(matrices[i]);
            }
            blas = made;
        }
        return made[stacked != null ? 0 : g];
    }

    private static BlasMatrices direct(INDArray a) {
        return BlasMatrices.of(a);
    }

    /** A new 'c'-order [G, out, in] array of the weights widened to {@code type}: a full copy, for tests and uploads. */
    public INDArray toArray(DataType type) {
        INDArray out = Nd4j.createUninitialized(type, shape(), 'c');
        for (int g = 0; g < groups; g++) {
            out.slice(g).assign(widened(g, type));
        }
        return out;
    }

    /**
     * Matrix g [out, in] in {@code type}: the stored array when it is of that type, else a new widened (or, for FP8,
     * dequantized) copy. For the reference products and copies; the grouped product widens per tile instead.
     */
    public INDArray widened(int g, DataType type) {
        INDArray m = matrix(g);
        if (m instanceof Fp8BlockMatrix fp8) {
            INDArray out = Nd4j.createUninitialized(type, m.shape(), 'c');
            fp8.dequantize(0, rows, 0, cols, out);
            return out;
        }
        return m.castTo(type);
    }

    /**
     * Rows {@code r0..r1-1} of matrix g [out, in] widened (FP8 dequantized, MXFP4 decoded) into {@code into}, a whole
     * 'c'-order [r1 - r0, in] FLOAT or DOUBLE array at offset 0: the values {@link #widened} gives, a block at a time.
     */
    public void widenRows(int g, long r0, long r1, INDArray into) {
        if (into.offset() != 0 || into.ordering() != 'c' || into.rank() != 2 || into.size(0) != r1 - r0
                || into.size(1) != cols || (into.dataType() != DataType.FLOAT && into.dataType() != DataType.DOUBLE)) {
            throw new IllegalArgumentException("rows " + r0 + ".." + r1 + " of a " + this + " widen into a whole 'c'-order "
                    + "float array [" + (r1 - r0) + ", " + cols + "], got " + into.shapeInfoToString());
        }
        Widened.widenInto(this, g, r0, r1, 0, cols, into);
    }

    /** Bytes the weights occupy in their stored type. */
    public long bytes() {
        return packed != null ? groups * packed[0].bytes() : groups * rows * cols * dataType.width();
    }

    @Override
    public String toString() {
        return "WeightStack" + Arrays.toString(shape()) + " " + (packed != null ? "MXFP4" : dataType)
                + (stacked != null ? " stacked" : " per group");
    }
}
