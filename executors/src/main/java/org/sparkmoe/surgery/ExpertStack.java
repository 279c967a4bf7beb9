package org.sparkmoe.surgery;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.Mxfp4;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.kernels.WeightStack;

import java.util.ArrayList;
import java.util.List;

/**
 * One projection of every expert of an MoE layer where the checkpoint keeps it (memory-mapped, in its stored type:
 * a {@link WeightStack} of per-expert views), read a block of rows at a time into reusable scratch, widened exactly as
 * {@link TensorSource#readFloat} widens; and combinations of experts with per-expert weights. No method holds the
 * E experts widened at once: a whole-stack float32 copy of a DeepSeek-V3 projection would be 15 GB.
 */
public final class ExpertStack {
    /** Elements of one block of rows: 4 MiB of float32 scratch, and for {@link #weightedSum} 2 × 8 MiB of float64. */
    static final long BLOCK_ELEMENTS = 1L << 20;

    private final WeightStack weights;
    private final long rowsPerBlock;
    private INDArray floats;   // [rowsPerBlock · cols] float32 scratch, made on first use

    ExpertStack(WeightStack weights, long blockElements) {
        this.weights = weights;
        this.rowsPerBlock = Math.max(1, Math.min(weights.rows(), blockElements / weights.cols()));
    }

    /** The E experts' [rows, cols] weights of projection p in decoder layer l, as stored (no copy). */
    public static ExpertStack of(TensorSource source, CheckpointLayout layout, int layer, int experts, Projection p) {
        return new ExpertStack(mapped(source, layout, layer, experts, p), BLOCK_ELEMENTS);
    }

    /** Per-expert views of the stored weights; gpt-oss's MXFP4 experts as their packed blocks and scales. */
    private static WeightStack mapped(TensorSource source, CheckpointLayout layout, int layer, int experts,
            Projection p) {
        if (source instanceof FusedExperts fused && fused.isPacked(layout.expert(layer, 0, p))) {
            List<Mxfp4> packed = new ArrayList<>(experts);
            for (int e = 0; e < experts; e++) {
                packed.add(fused.packed(layout.expert(layer, e, p)));
            }
            return WeightStack.ofMxfp4(packed);
        }
        List<INDArray> stored = new ArrayList<>(experts);
        for (int e = 0; e < experts; e++) {
            stored.add(source.stored(layout.expert(layer, e, p)));
        }
        return WeightStack.of(stored);
    }

    /** The stored weights, for products that widen them per tile. */
    public WeightStack weights() {
        return weights;
    }

    public int experts() {
        return weights.groups();
    }

    public long rows() {
        return weights.rows();
    }

    public long cols() {
        return weights.cols();
    }

    /** Rows per block: the most {@link #rows(int, long, long)} widens at once. */
    public long rowsPerBlock() {
        return rowsPerBlock;
    }

    /** Bytes of scratch one stack uses at most: a float32 block, and two float64 blocks while summing. */
    public static long scratchBytes() {
        return BLOCK_ELEMENTS * (Float.BYTES + 2L * Double.BYTES);
    }

    /**
     * Rows {@code r0..r1-1} (at most {@link #rowsPerBlock()}) of expert e, float32 [r1 - r0, cols]: a view of this
     * stack's scratch, valid until its next call.
     */
    public INDArray rows(int e, long r0, long r1) {
        long n = r1 - r0;
        if (n < 1 || n > rowsPerBlock) {
            throw new IllegalArgumentException("rows " + r0 + ".." + r1 + ": a block holds 1 to " + rowsPerBlock);
        }
        if (floats == null) {
            floats = Nd4j.createUninitialized(DataType.FLOAT, rowsPerBlock * cols());
        }
        INDArray block = Nd4j.create(floats.data(), new long[] {n, cols()}, new long[] {cols(), 1}, 0, 'c',
                DataType.FLOAT);
        weights.widenRows(e, r0, r1, block);
        return block;
    }

    /** Expert e [rows, cols], float32: a new array (one expert, as {@link TensorSource#readFloat} gives it). */
    public INDArray expert(int e) {
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, new long[] {rows(), cols()}, 'c');
        weights.widenRows(e, 0, rows(), out);
        return out;
    }

    /**
     * Σₑ wₑ·W_e: every element summed in float64 over the experts in order (those of weight 0 skipped), starting at
     * 0 — block of rows by block of rows, the same sums as over the whole stack — returned in {@code type}.
     *
     * @param weights [E]
     * @return [rows, cols]
     */
    public INDArray weightedSum(double[] weights, DataType type) {
        if (weights.length != experts()) {
            throw new IllegalArgumentException("weights for " + weights.length + " experts, stack of " + experts());
        }
        INDArray out = Nd4j.createUninitialized(type, new long[] {rows(), cols()}, 'c');
        INDArray wide = Nd4j.createUninitialized(DataType.DOUBLE, rowsPerBlock * cols());
        INDArray sums = Nd4j.createUninitialized(DataType.DOUBLE, rowsPerBlock * cols());
        for (long r0 = 0; r0 < rows(); r0 += rowsPerBlock) {
            long r1 = Math.min(rows(), r0 + rowsPerBlock);
            long[] shape = {r1 - r0, cols()};
            long[] stride = {cols(), 1};
            INDArray x = Nd4j.create(wide.data(), shape, stride, 0, 'c', DataType.DOUBLE);     // [n, cols]
            INDArray sum = Nd4j.create(sums.data(), shape, stride, 0, 'c', DataType.DOUBLE);   // [n, cols]
            sum.assign(0);
            for (int e = 0; e < weights.length; e++) {
                if (weights[e] != 0) {
                    sum.addi(x.assign(rows(e, r0, r1)).muli(weights[e]));
                }
            }
            out.get(NDArrayIndex.interval(r0, r1), NDArrayIndex.all()).assign(sum.castTo(type));
        }
        return out;
    }

    /**
     * The E experts' weights of projection p in layer l, stacked [E, rows, cols], float32: a whole copy, for
     * references in tests; the surgeries read through {@link #of} instead.
     */
    public static INDArray read(TensorSource source, CheckpointLayout layout, int layer, int experts, Projection p) {
        INDArray first = source.readFloat(layout.expert(layer, 0, p));
        INDArray stack = Nd4j.createUninitialized(first.dataType(), new long[] {experts, first.size(0), first.size(1)}, 'c');
        stack.slice(0).assign(first);
        for (int e = 1; e < experts; e++) {
            stack.slice(e).assign(source.readFloat(layout.expert(layer, e, p)));
        }
        return stack;
    }

    /** gpt-oss: the E experts' biases of projection p in layer l, stacked [E, 1, n], float32. */
    public static INDArray readBiases(TensorSource source, CheckpointLayout layout, int layer, int experts,
                                      Projection p) {
        INDArray first = source.readFloat(layout.expertBias(layer, 0, p));
        INDArray stack = Nd4j.createUninitialized(first.dataType(), new long[] {experts, 1, first.length()}, 'c');
        for (int e = 0; e < experts; e++) {
            stack.slice(e).assign((e == 0 ? first : source.readFloat(layout.expertBias(layer, e, p))).reshape(1, -1));
        }
        return stack;
    }

    /**
     * Σₑ wₑ·stack[e] accumulated in float64, returned in the stack's data type: for the small stacks held whole
     * (router rows, biases).
     *
     * @param stack   [E, rows, cols]
     * @param weights [E]
     * @return [rows, cols]
     */
    public static INDArray weightedSum(INDArray stack, double[] weights) {
        if (weights.length != stack.size(0)) {
            throw new IllegalArgumentException("weights for " + weights.length + " experts, stack of " + stack.size(0));
        }
        INDArray sum = Nd4j.zeros(DataType.DOUBLE, stack.size(1), stack.size(2));
        for (int e = 0; e < weights.length; e++) {
            if (weights[e] != 0) {
                sum.addi(stack.slice(e).castTo(DataType.DOUBLE).mul(weights[e]));
            }
        }
        return sum.castTo(stack.dataType());
    }
}
