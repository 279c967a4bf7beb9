package org.sparkmoe.train;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.NativeElements;

/**
 * Global gradient-norm clipping as torch's {@code clip_grad_norm_} (2-norm): total = ‖(‖g_1‖, …, ‖g_n‖)‖₂,
 * every gradient multiplied by min(1, max / (total + 1e-6)). Norms in float64, tensors in map order.
 */
public final class GradClip {
    private GradClip() {
    }

    /**
     * Clips {@code grads} in place, {@value AdamW#CHUNK} elements at a time (a gradient that is not 'c'-contiguous is
     * first replaced by a contiguous copy); with {@code maxNorm} infinite nothing changes.
     *
     * @return the total norm before clipping
     */
    public static double clip(Map<String, INDArray> grads, double maxNorm) {
        double[] chunk = new double[AdamW.CHUNK];
        float[] scratch = new float[AdamW.CHUNK];
        double[] squares = new double[grads.size()];
        int t = 0;
        for (INDArray g : grads.values()) {
            double sq = 0;
            long n = g.length();
            NativeElements elements = n == 0 ? null : NativeElements.of(g);
            for (long from = 0; from < n; from += chunk.length) {
                int len = (int) Math.min(chunk.length, n - from);
                elements.read(from, chunk, len, scratch);
                for (int i = 0; i < len; i++) {
                    sq += chunk[i] * chunk[i];                    // Σ x² in element order, in float64
                }
            }
            squares[t++] = sq;
        }
        double total = total(squares);
        double coef = coefficient(total, maxNorm);
        if (coef < 1.0) {
            for (String key : grads.keySet()) {
                long n = grads.get(key).length();
                if (n == 0) {
                    continue;
                }
                NativeElements elements = NativeElements.of(TrainState.contiguous(grads, key));
                for (long from = 0; from < n; from += chunk.length) {
                    int len = (int) Math.min(chunk.length, n - from);
                    elements.read(from, chunk, len, scratch);
                    for (int i = 0; i < len; i++) {
                        chunk[i] *= coef;
                    }
                    elements.write(from, chunk, len, scratch);
                }
            }
        }
        return total;
    }

    /** The global norm from each tensor's Σ x², in tensor order: ‖(‖g_1‖, …, ‖g_n‖)‖₂. */
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
