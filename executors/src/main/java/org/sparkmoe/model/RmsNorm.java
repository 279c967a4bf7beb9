package org.sparkmoe.model;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.NativeElements;

/**
 * RMSNorm as transformers computes it in float32: {@code w ⊙ (x · rsqrt(mean(x²) + eps))}. Every pass reads and
 * writes the arrays' native memory a block of rows at a time (no Java copy of the whole array). The training pair
 * ({@link #forwardTraining}, {@link #backward}) takes FLOAT or DOUBLE (float64 arithmetic row by row) and in FLOAT is
 * bit-identical to {@link #forward}, which takes FLOAT.
 */
public final class RmsNorm {
    /** Elements read or written at a time: whole rows, at least one. */
    private static final int BLOCK_ELEMENTS = 1 << 13;

    private final float[] weight; // [D]
    private final double eps;

    public RmsNorm(INDArray weight, double eps) {
        this.weight = weight.dup('c').data().asFloat();
        this.eps = eps;
    }

    /** x [T, D] FLOAT → new [T, D], a block of rows at a time between the arrays' native memory and a Java block. */
    public INDArray forward(INDArray x) {
        int hidden = weight.length;
        if (x.dataType() != DataType.FLOAT) {
            throw new IllegalArgumentException("expected a FLOAT array, got " + x.dataType());
        }
        INDArray out = Nd4j.createUninitialized(DataType.FLOAT, x.shape(), 'c');
        int rows = Math.toIntExact(x.length() / hidden);
        if (rows == 0) {
            return out;
        }
        NativeElements in = NativeElements.of(x);
        NativeElements outElements = NativeElements.of(out);
        int block = rowsPerBlock(hidden, rows);
        float[] v = new float[block * hidden];              // a block of rows [rows, D]
        for (int first = 0; first < rows; first += block) {
            int n = Math.min(block, rows - first) * hidden;
            long from = (long) first * hidden;
            in.readFloats(from, v, n);
            for (int at = 0; at < n; at += hidden) {
                double sumSq = 0;
                for (int d = 0; d < hidden; d++) {
                    sumSq += v[at + d] * v[at + d];
                }
                float inv = (float) (1.0 / Math.sqrt((float) (sumSq / hidden) + eps));
                for (int d = 0; d < hidden; d++) {
                    v[at + d] = weight[d] * (v[at + d] * inv);
                }
            }
            outElements.writeFloats(from, v, n);
        }
        return out;
    }

    /**
     * The forward result and what {@link #backward} needs.
     *
     * @param x   [T, D] the input
     * @param inv [T] r = rsqrt(mean(x²) + eps) per row
     * @param out [T, D]
     */
    public record Forward(INDArray x, double[] inv, INDArray out) {
    }

    /** x [T, D] → out [T, D], FLOAT or DOUBLE, a block of rows at a time in the array's own memory. */
    public Forward forwardTraining(INDArray x) {
        int hidden = weight.length;
        boolean single = x.dataType() == DataType.FLOAT;
        INDArray out = Nd4j.createUninitialized(x.dataType(), x.shape(), 'c');
        double[] inv = new double[Math.toIntExact(x.length() / hidden)];
        if (inv.length == 0) {
            return new Forward(x, inv, out);
        }
        NativeElements in = NativeElements.of(x);
        NativeElements outElements = NativeElements.of(out);
        int block = rowsPerBlock(hidden, inv.length);
        double[] v = new double[block * hidden];            // a block of rows [rows, D]
        float[] staging = new float[block * hidden];
        for (int first = 0; first < inv.length; first += block) {
            int rows = Math.min(block, inv.length - first);
            long at = (long) first * hidden;
            in.read(at, v, rows * hidden, staging);
            for (int r = 0; r < rows; r++) {
                int row = r * hidden;
                int t = first + r;
                double sumSq = 0;
                for (int d = 0; d < hidden; d++) {
                    sumSq += Flat.round(v[row + d] * v[row + d], single);
                }
                inv[t] = Flat.round(1.0 / Math.sqrt(Flat.round(sumSq / hidden, single) + eps), single);
                for (int d = 0; d < hidden; d++) {
                    v[row + d] = Flat.round(weight[d] * Flat.round(v[row + d] * inv[t], single), single);
                }
            }
            outElements.write(at, v, rows * hidden, staging);
        }
        return new Forward(x, inv, out);
    }

    /** Rows per block: {@link #BLOCK_ELEMENTS} worth of whole rows, at least one, at most {@code rows}. */
    private static int rowsPerBlock(int hidden, int rows) {
        return Math.max(1, Math.min(rows, BLOCK_ELEMENTS / hidden));
    }

    /**
     * The mirror of {@link #forwardTraining}: with y = w ⊙ x·r, {@code dx = r·(w ⊙ dy) − x · r³/D · Σ(w ⊙ dy ⊙ x)}
     * (the weight is frozen), row by row.
     *
     * @param dOut [T, D]
     * @return dx [T, D]
     */
    public INDArray backward(Forward fwd, INDArray dOut) {
        int hidden = weight.length;
        INDArray dxArr = Nd4j.createUninitialized(dOut.dataType(), dOut.shape(), 'c');
        if (fwd.inv().length == 0) {
            return dxArr;
        }
        NativeElements xElements = NativeElements.of(fwd.x());
        NativeElements dyElements = NativeElements.of(dOut);
        NativeElements dxElements = NativeElements.of(dxArr);
        int block = rowsPerBlock(hidden, fwd.inv().length);
        double[] x = new double[block * hidden];            // a block of rows each [rows, D]
        double[] dy = new double[block * hidden];
        double[] dx = new double[block * hidden];
        float[] staging = new float[block * hidden];
        for (int first = 0; first < fwd.inv().length; first += block) {
            int rows = Math.min(block, fwd.inv().length - first);
            long at = (long) first * hidden;
            xElements.read(at, x, rows * hidden, staging);
            dyElements.read(at, dy, rows * hidden, staging);
            for (int r = 0; r < rows; r++) {
                int row = r * hidden;
                double inv = fwd.inv()[first + r];
                double dot = 0;
                for (int d = 0; d < hidden; d++) {
                    dot += weight[d] * dy[row + d] * x[row + d];
                }
                double c = inv * inv * inv * dot / hidden;
                for (int d = 0; d < hidden; d++) {
                    dx[row + d] = inv * weight[d] * dy[row + d] - x[row + d] * c;
                }
            }
            dxElements.write(at, dx, rows * hidden, staging);
        }
        return dxArr;
    }
}
