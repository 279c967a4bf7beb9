package org.sparkmoe.train;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.NativeElements;

/**
 * torch.optim.AdamW (amsgrad off, maximize off), element by element in float64, stored in the state's type:
 * <pre>
 *   t      = step + 1
 *   θ     ← θ · (1 − lr·λ)                         decoupled weight decay
 *   m     ← m + (1 − β1)·(g − m)                   torch's lerp
 *   v     ← β2·v + (1 − β2)·g²
 *   θ     ← θ − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
 * </pre>
 *
 * @param beta1       β1 ∈ [0, 1)
 * @param beta2       β2 ∈ [0, 1)
 * @param eps         ε &gt; 0
 * @param weightDecay λ ≥ 0
 */
public record AdamW(double beta1, double beta2, double eps, double weightDecay) implements java.io.Serializable {
    /** Elements per pass of {@link #update(TrainState, Map, double)} through a tensor. */
    static final int CHUNK = 4096;

    public AdamW {
        if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
            throw new IllegalArgumentException("AdamW betas must be in [0, 1), got " + beta1 + ", " + beta2);
        }
        if (!(eps > 0) || Double.isInfinite(eps)) {
            throw new IllegalArgumentException("AdamW eps must be positive and finite, got " + eps);
        }
        if (!(weightDecay >= 0) || Double.isInfinite(weightDecay)) {
            throw new IllegalArgumentException("AdamW weight decay must be ≥ 0 and finite, got " + weightDecay);
        }
    }

    /** torch's defaults: β = (0.9, 0.999), ε = 1e-8, weight decay 0.01. */
    public static AdamW torchDefaults() {
        return new AdamW(0.9, 0.999, 1e-8, 0.01);
    }

    /**
     * One update of every trainable tensor with learning rate {@code lr}: the state's tensors and moments are
     * overwritten in place, {@value #CHUNK} elements at a time (no new native buffers, no whole-tensor float64 copies
     * on the heap per step), and its step advances by one. A tensor that is not 'c'-contiguous is first replaced by a
     * contiguous copy.
     *
     * @param grads the gradients, keys and shapes as {@code state.params()}
     */
    public void update(TrainState state, Map<String, INDArray> grads, double lr) {
        TrainState.checkLike("gradients", state.params(), grads);
        long t = state.step() + 1;
        double[] theta = new double[CHUNK];
        double[] g = new double[CHUNK];
        double[] m = new double[CHUNK];
        double[] v = new double[CHUNK];
        float[] scratch = new float[CHUNK];
        for (String key : state.params().keySet()) {
            INDArray grad = grads.get(key);
            long n = grad.length();
            if (n == 0) {
                continue;
            }
            NativeElements pe = NativeElements.of(TrainState.contiguous(state.params(), key));
            NativeElements me = NativeElements.of(TrainState.contiguous(state.m(), key));
            NativeElements ve = NativeElements.of(TrainState.contiguous(state.v(), key));
            NativeElements ge = NativeElements.of(grad);
            for (long from = 0; from < n; from += CHUNK) {
                int len = (int) Math.min(CHUNK, n - from);
                pe.read(from, theta, len, scratch);
                ge.read(from, g, len, scratch);
                me.read(from, m, len, scratch);
                ve.read(from, v, len, scratch);
                update(theta, g, m, v, len, t, lr);
                pe.write(from, theta, len, scratch);
                me.write(from, m, len, scratch);
                ve.write(from, v, len, scratch);
            }
        }
        state.advance(t);
    }

    /**
     * Update {@code t} (1-based) of one tensor, element by element in place: θ, m and v become their new values.
     *
     * @param g the gradient, unchanged
     */
    public void update(double[] theta, double[] g, double[] m, double[] v, long t, double lr) {
        update(theta, g, m, v, theta.length, t, lr);
    }

    /** {@link #update(double[], double[], double[], double[], long, double)} of the first {@code n} elements. */
    private void update(double[] theta, double[] g, double[] m, double[] v, int n, long t, double lr) {
        double bc1 = 1 - Math.pow(beta1, t);
        double bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, t));
        double stepSize = lr / bc1;
        for (int i = 0; i < n; i++) {
            theta[i] *= 1 - lr * weightDecay;
            m[i] += (1 - beta1) * (g[i] - m[i]);
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
            theta[i] -= stepSize * m[i] / (Math.sqrt(v[i]) / bc2Sqrt + eps);
        }
    }
}
