package org.sparkmoe.kernels;

import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.Fp8BlockMatrix;

/**
 * G weight matrices of one shape [out, in] (Hugging Face Linear layout) and one element type, the weight operand of
 * a {@link GroupedGemm}: either one stacked array [G, out, in] (LoRA factors, weights built in memory) or one array
 * per group (expert weights memory-mapped from a checkpoint, where the E experts of a projection are separate
 * tensors at no regular distance from each other). Each matrix is row-major with unit column stride.
 *
 * <p>The element type is what the weights are stored in: FLOAT or DOUBLE (used as they are by a product of the
 * same type), or BFLOAT16/HALF, widened per use (see {@link Widened}), or FP8 block-quantized matrices
 * ({@link Fp8BlockMatrix}, UINT8 codes), dequantized per use the same way. Immutable.
 */
public final class WeightStack {
    private static final List<DataType> STORED = List.of(DataType.FLOAT, DataType.DOUBLE, DataType.BFLOAT16,
            DataType.HALF);

    private final INDArray stacked;      // [G, out, in], or null
    private final INDArray[] matrices;   // G × [out, in], or null
    private final int groups;
    private final long rows;
    private final long cols;
    private final DataType dataType;
    private volatile BlasMatrices[] blas;  // as BLAS sees the stored arrays: 1 (stacked) or G, made on first use

    private WeightStack(INDArray stacked, INDArray[] matrices, int groups, long rows, long cols, DataType type) {
        this.stacked = stacked;
        this.matrices = matrices;
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
        return new WeightStack(w, null, (int) w.size(0), w.size(1), w.size(2), w.dataType());
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
            if (m.size(1) > 1 && m.stride(1) != 1) {
                throw new IllegalArgumentException("per-group weights need unit column stride, got strides "
                        + Arrays.toString(m.stride()));
            }
        }
        checkType(first);
        return new WeightStack(null, perGroup.toArray(new INDArray[0]), perGroup.size(), first.size(0),
                first.size(1), first.dataType());
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

    /** The stored element type. */
    public DataType dataType() {
        return dataType;
    }

    /** The type products with these weights compute in: DOUBLE for DOUBLE weights, else FLOAT. */
    public DataType computeType() {
        return dataType == DataType.DOUBLE ? DataType.DOUBLE : DataType.FLOAT;
    }

    /** Matrix g [out, in], a view (no copy). */
    public INDArray matrix(int g) {
        return stacked != null ? stacked.slice(g) : matrices[g];
    }

    /** The stacked array when this stack was built from one, else null. */
    INDArray stacked() {
        return stacked;
    }

    /**
     * Matrix g as BLAS sees it where it lies (stored FLOAT or DOUBLE): the stacked matrices (index g) or g's own
     * (index 0). An array whose layout BLAS cannot take is copied to 'c' order once.
     */
    BlasMatrices blas(int g) {
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
        BlasMatrices m = BlasMatrices.of(a);
        return m != null ? m : BlasMatrices.of(a.dup('c'));
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

    /** Bytes the weights occupy in their stored type. */
    public long bytes() {
        return groups * rows * cols * dataType.width();
    }

    @Override
    public String toString() {
        return "WeightStack" + Arrays.toString(shape()) + " " + dataType + (stacked != null ? " stacked" : " per group");
    }
}
