package org.sparkmoe.routing;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.Softmax;

/**
 * The auxiliary load-balancing loss exactly as transformers' {@code load_balancing_loss_func} (no attention
 * mask): concatenate the router logits of all L layers into [L·T, E], p = softmax over E, top-K of p as a one-hot
 * {@code expert_mask [L·T, K, E]}, {@code tokens_per_expert [K, E]} = mean of the mask over tokens,
 * {@code router_prob_per_expert [E]} = mean of p over tokens, loss = E · Σ_{k,e} tokens_per_expert[k,e] ·
 * router_prob_per_expert[e]. Computed in float64; top-K ties go to the lower expert index.
 *
 * <p>Gradient: the mask is constant (as autograd sees it), so with f[e] = Σ_k tokens_per_expert[k,e] and
 * c[e] = E·f[e], dL/dp[n,e] = c[e]/N and through the softmax dL/dz[n] = p[n] ⊙ (c − p[n]·c) / N.
 *
 * <p>Row by row: each row of logits is read from native memory into a float64 [E] and its softmax recomputed where
 * the gradient needs it (the same bits as the sums' pass), so the heap holds O(E) whatever L·T is; the [L·T, E]
 * float64 probabilities of the formula would be 805 MB at the Qwen3-30B-A3B shape (48 layers, 128 experts) and
 * 8 windows of 2048 tokens.
 */
public final class LoadBalancingLoss {
    private final List<INDArray> routerLogits;
    private final int numExperts;
    private final Stats stats;

    private LoadBalancingLoss(List<INDArray> routerLogits, int numExperts, Stats stats) {
        this.routerLogits = routerLogits;
        this.numExperts = numExperts;
        this.stats = stats;
    }

    /**
     * The loss of these router logits: one pass over their rows for the sums, which {@link #value} and
     * {@link #gradient} share.
     *
     * @param routerLogits per layer [T, E] (T may differ between layers)
     */
    public static LoadBalancingLoss of(List<INDArray> routerLogits, int numExperts, int topK) {
        return new LoadBalancingLoss(routerLogits, numExperts, stats(routerLogits, numExperts, topK));
    }

    /** @return the loss */
    public double value() {
        double loss = 0;
        for (int e = 0; e < numExperts; e++) {
            loss += stats.tokensPerExpert[e] * stats.routerProbPerExpert[e];
        }
        return loss * numExperts;
    }

    /**
     * @param dLoss the upstream gradient of the loss (its coefficient in the total loss)
     * @return dLoss · dL/dlogits per layer, [T, E] each, in that layer's data type
     */
    public List<INDArray> gradient(double dLoss) {
        Stats s = stats;
        double[] c = new double[numExperts];                                       // dL/drouter_prob [E]
        for (int e = 0; e < numExperts; e++) {
            c[e] = dLoss * numExperts * s.tokensPerExpert[e];
        }
        double[] p = new double[numExperts];                                       // one row: logits, then probs
        double[] dz = new double[numExperts];                                      // one row of dL/dlogits
        float[] scratch = new float[numExperts];
        List<INDArray> grads = new ArrayList<>(routerLogits.size());
        for (INDArray layer : routerLogits) {
            long tokens = layer.size(0);
            if (tokens == 0) {
                grads.add(Nd4j.create(layer.dataType(), layer.shape()));
                continue;
            }
            NativeElements logits = NativeElements.of(layer);
            INDArray grad = Nd4j.createUninitialized(layer.dataType(), layer.shape(), 'c');       // [T, E]
            NativeElements out = NativeElements.of(grad);
            for (long t = 0; t < tokens; t++) {
                logits.read(t * numExperts, p, numExperts, scratch);
                Softmax.row(p, 0, numExperts, false);
                double pc = 0;
                for (int e = 0; e < numExperts; e++) {
                    pc += p[e] * c[e];
                }
                for (int e = 0; e < numExperts; e++) {
                    dz[e] = p[e] * (c[e] - pc) / s.rows;
                }
                out.write(t * numExperts, dz, numExperts, scratch);
            }
            grads.add(grad);
        }
        return grads;
    }

    /**
     * @param tokensPerExpert     [E] Σ over K of tokens_per_expert [K, E]
     * @param routerProbPerExpert [E]
     * @param rows                L·T
     */
    private record Stats(double[] tokensPerExpert, double[] routerProbPerExpert, long rows) {
    }

    private static Stats stats(List<INDArray> routerLogits, int numExperts, int topK) {
        if (routerLogits == null || routerLogits.isEmpty()) {
            throw new IllegalArgumentException("load-balancing loss needs the router logits of at least one layer");
        }
        if (topK < 1 || topK > numExperts) {
            throw new IllegalArgumentException("top-k must be in [1, " + numExperts + "], got " + topK);
        }
        long rows = 0;
        for (int l = 0; l < routerLogits.size(); l++) {
            INDArray layer = routerLogits.get(l);
            if (layer.rank() != 2 || layer.size(1) != numExperts) {
                throw new IllegalArgumentException("router logits of layer " + l + " must be [T, " + numExperts
                        + "], got " + Arrays.toString(layer.shape()));
            }
            if (layer.dataType() != DataType.FLOAT && layer.dataType() != DataType.DOUBLE) {
                throw new IllegalArgumentException("router logits of layer " + l + " must be FLOAT or DOUBLE, got "
                        + layer.dataType());
            }
            rows += layer.size(0);
        }
        if (rows == 0) {
            throw new IllegalArgumentException("load-balancing loss needs at least one token, got none");
        }
        double[] tokens = new double[numExperts];
        double[] meanProb = new double[numExperts];
        double[] p = new double[numExperts];                                       // one row: logits, then probs
        float[] scratch = new float[numExperts];
        int[] chosen = new int[topK];
        for (INDArray layer : routerLogits) {
            if (layer.size(0) == 0) {
                continue;
            }
            NativeElements logits = NativeElements.of(layer);
            for (long t = 0; t < layer.size(0); t++) {
                logits.read(t * numExperts, p, numExperts, scratch);
                Softmax.row(p, 0, numExperts, false);
                TopK.select(p, 0, numExperts, topK, null, chosen, 0);
                for (int best : chosen) {
                    tokens[best] += 1.0;
                }
                for (int e = 0; e < numExperts; e++) {
                    meanProb[e] += p[e];
                }
            }
        }
        for (int e = 0; e < numExperts; e++) {
            tokens[e] /= rows;                                                     // torch.mean over tokens
            meanProb[e] /= rows;
        }
        return new Stats(tokens, meanProb, rows);
    }
}
