package org.sparkmoe.model;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.NativeElements;

/**
 * RMSNorm as transformers computes it in float32: {@code w ⊙ (x · rsqrt(mean(x²) + eps))}. The training pair
 * ({@link #forwardTraining}, {@link #backward}) takes FLOAT or DOUBLE, reads and writes the arrays' native memory a
 * row at a time (float64 arithmetic on one row, no float64 copy of the whole array), and in FLOAT is bit-identical
 * to {@link #forward}.
 */
public final class RmsNorm {
    private final float[] weight; // [D]
    private final double eps;

    public RmsNorm(INDArray weight, double eps) {
        this.weight = weight.dup('c').data().asFloat();
        this.eps = eps;
    }

    /** x [T, D] → new [T, D]. */
    public INDArray forward(INDArray x) {
        int hidden = weight.length;
        float[] v = Flat.floats(x);
        for (int at = 0; at < v.length; at += hidden) {
            double sumSq = 0;
            for (int d = 0; d < hidden; d++) {
                sumSq += v[at + d] * v[at + d];
            }
            float inv = (float) (1.0 / Math.sqrt((float) (sumSq / hidden) + eps));
            for (int d = 0; d < hidden; d++) {
                v[at + d] = weight[d] * (v[at + d] * inv);
            }
        }
        return Flat.array(v, x.shape());
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

    /** x [T, D] → out [T, D], FLOAT or DOUBLE, one row at a time in the array's own memory (no float64 copy). */
    public Forward forwardTraining(INDArray x) {
        int hidden = weight.length;
        boolean single = x.dataType() == org.nd4j.linalg.api.buffer.DataType.FLOAT;
        INDArray out = Nd4j.createUninitialized(x.dataType(), x.shape(), 'c');
        double[] inv = new double[Math.toIntExact(x.length() / hidden)];
        if (inv.length == 0) {
            return new Forward(x, inv, out);
        }
        NativeElements in = NativeElements.of(x);
        NativeElements outElements = NativeElements.of(out);
        double[] v = new double[hidden];          // one row [D]
        float[] staging = new float[hidden];
        for (int t = 0; t < inv.length; t++) {
            long at = (long) t * hidden;
            in.read(at, v, hidden, staging);
            double sumSq = 0;
            for (int d = 0; d < hidden; d++) {
                sumSq += Flat.round(v[d] * v[d], single);
            }
            inv[t] = Flat.round(1.0 / Math.sqrt(Flat.round(sumSq / hidden, single) + eps), single);
            for (int d = 0; d < hidden; d++) {
                v[d] = Flat.round(weight[d] * Flat.round(v[d] * inv[t], single), single);
            }
            outElements.write(at, v, hidden, staging);
        }
        return new Forward(x, inv, out);
    }

    /**
     * The mirror of {@link #forwardTraining}: with y = w ⊙ x·r, {@code dx = r·(w ⊙ dy) − x · r³/D · Σ(w ⊙ dy ⊙ x)}
     * (the weight is frozen), one row at a time.
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
        double[] x = new double[hidden];          // one row each [D]
        double[] dy = new double[hidden];
        double[] dx = new double[hidden];
        float[] staging = new float[hidden];
        for (int t = 0; t < fwd.inv().length; t++) {
            long at = (long) t * hidden;
            xElements.read(at, x, hidden, staging);
            dyElements.read(at, dy, hidden, staging);
            double r = fwd.inv()[t];
            double dot = 0;
            for (int d = 0; d < hidden; d++) {
                dot += weight[d] * dy[d] * x[d];
            }
            double c = r * r * r * dot / hidden;
            for (int d = 0; d < hidden; d++) {
                dx[d] = r * weight[d] * dy[d] - x[d] * c;
            }
            dxElements.write(at, dx, hidden, staging);
        }
        return dxArr;
    }
}
