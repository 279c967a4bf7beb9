package org.sparkmoe.train;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;

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
     * overwritten in place (no new native buffers per step), and its step advances by one.
     *
     * @param grads the gradients, keys and shapes as {@code state.params()}
     */
    public void update(TrainState state, Map<String, INDArray> grads, double lr) {
        TrainState.checkLike("gradients", state.params(), grads);
        long t = state.step() + 1;
        for (Map.Entry<String, INDArray> e : state.params().entrySet()) {
            String key = e.getKey();
            INDArray p = e.getValue();
            INDArray mArray = state.m().get(key);
            INDArray vArray = state.v().get(key);
            double[] theta = Flat.values(p);
            double[] m = Flat.values(mArray);
            double[] v = Flat.values(vArray);
            update(theta, Flat.values(grads.get(key)), m, v, t, lr);
            Flat.overwrite(p, theta);
            Flat.overwrite(mArray, m);
            Flat.overwrite(vArray, v);
        }
        state.advance(t);
    }

    /**
     * Update {@code t} (1-based) of one tensor, element by element in place: θ, m and v become their new values.
     *
     * @param g the gradient, unchanged
     */
    public void update(double[] theta, double[] g, double[] m, double[] v, long t, double lr) {
        double bc1 = 1 - Math.pow(beta1, t);
        double bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, t));
        double stepSize = lr / bc1;
        for (int i = 0; i < theta.length; i++) {
            theta[i] *= 1 - lr * weightDecay;
            m[i] += (1 - beta1) * (g[i] - m[i]);
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
            theta[i] -= stepSize * m[i] / (Math.sqrt(v[i]) / bc2Sqrt + eps);
        }
    }
}
