package org.sparkmoe.train;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;

/**
 * Global gradient-norm clipping as torch's {@code clip_grad_norm_} (2-norm): total = ‖(‖g_1‖, …, ‖g_n‖)‖₂,
 * every gradient multiplied by min(1, max / (total + 1e-6)). Norms in float64, tensors in map order.
 */
public final class GradClip {
    private GradClip() {
    }

    /**
     * Clips {@code grads} in place (each replaced by a scaled copy); with {@code maxNorm} infinite nothing changes.
     *
     * @return the total norm before clipping
     */
    public static double clip(Map<String, INDArray> grads, double maxNorm) {
        double[] squares = new double[grads.size()];
        int t = 0;
        for (INDArray g : grads.values()) {
            squares[t++] = squares(Flat.values(g));
        }
        double total = total(squares);
        double coef = coefficient(total, maxNorm);
        if (coef < 1.0) {
            for (Map.Entry<String, INDArray> e : grads.entrySet()) {
                double[] v = Flat.values(e.getValue());
                for (int i = 0; i < v.length; i++) {
                    v[i] *= coef;
                }
                e.setValue(Flat.array(v, e.getValue().shape(), e.getValue().dataType()));
            }
        }
        return total;
    }

    /** Σ x² of one tensor's elements, in element order, in float64. */
    public static double squares(double[] g) {
        double sq = 0;
        for (double x : g) {
            sq += x * x;
        }
        return sq;
    }

    /** The global norm from each tensor's {@link #squares}, in tensor order: ‖(‖g_1‖, …, ‖g_n‖)‖₂. */
    public static double total(double[] tensorSquares) {
        double sumOfSquares = 0;
        for (double sq : tensorSquares) {
            double norm = Math.sqrt(sq);
            sumOfSquares += norm * norm;
        }
        return Math.sqrt(sumOfSquares);
    }

    /**
     * The factor every gradient element is multiplied by: min(1, max / (total + 1e-6)); a factor below 1 is applied
     * in float64 and the product rounded to the gradient's type.
     */
    public static double coefficient(double total, double maxNorm) {
        if (!(maxNorm > 0)) {
            throw new IllegalArgumentException("max gradient norm must be positive (or infinite for none), got "
                    + maxNorm);
        }
        return Math.min(1.0, maxNorm / (total + 1e-6));
    }
}
