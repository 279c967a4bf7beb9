package org.sparkmoe.routing;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;
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
 */
public final class LoadBalancingLoss {
    private LoadBalancingLoss() {
    }

    /**
     * @param routerLogits per layer [T, E] (T may differ between layers)
     * @return the loss
     */
    public static double value(List<INDArray> routerLogits, int numExperts, int topK) {
        Stats s = stats(routerLogits, numExperts, topK);
        double loss = 0;
        for (int e = 0; e < numExperts; e++) {
            loss += s.tokensPerExpert[e] * s.routerProbPerExpert[e];
        }
        return loss * numExperts;
    }

    /**
     * @param dLoss the upstream gradient of the loss (its coefficient in the total loss)
     * @return dLoss · dL/dlogits per layer, [T, E] each, in that layer's data type
     */
    public static List<INDArray> gradient(List<INDArray> routerLogits, int numExperts, int topK, double dLoss) {
        Stats s = stats(routerLogits, numExperts, topK);
        double[] c = new double[numExperts];                                       // dL/drouter_prob [E]
        for (int e = 0; e < numExperts; e++) {
            c[e] = dLoss * numExperts * s.tokensPerExpert[e];
        }
        List<INDArray> grads = new ArrayList<>(routerLogits.size());
        int row = 0;
        for (INDArray layer : routerLogits) {
            int tokens = (int) layer.size(0);
            double[] dz = new double[tokens * numExperts];                         // [T, E]
            for (int t = 0; t < tokens; t++, row++) {
                int p = row * numExperts;
                double pc = 0;
                for (int e = 0; e < numExperts; e++) {
                    pc += s.probs[p + e] * c[e];
                }
                for (int e = 0; e < numExperts; e++) {
                    dz[t * numExperts + e] = s.probs[p + e] * (c[e] - pc) / s.rows;
                }
            }
            grads.add(Flat.array(dz, layer.shape(), layer.dataType()));
        }
        return grads;
    }

    /**
     * @param probs               [L·T, E] softmax of the concatenated logits
     * @param tokensPerExpert     [E] Σ over K of tokens_per_expert [K, E]
     * @param routerProbPerExpert [E]
     */
    private record Stats(double[] probs, double[] tokensPerExpert, double[] routerProbPerExpert, int rows) {
    }

    private static Stats stats(List<INDArray> routerLogits, int numExperts, int topK) {
        if (routerLogits == null || routerLogits.isEmpty()) {
            throw new IllegalArgumentException("load-balancing loss needs the router logits of at least one layer");
        }
        if (topK < 1 || topK > numExperts) {
            throw new IllegalArgumentException("top-k must be in [1, " + numExperts + "], got " + topK);
        }
        int rows = 0;
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
            rows += (int) layer.size(0);
        }
        if (rows == 0) {
            throw new IllegalArgumentException("load-balancing loss needs at least one token, got none");
        }
        double[] probs = new double[rows * numExperts];                            // [L·T, E]
        int at = 0;
        for (INDArray layer : routerLogits) {
            double[] z = Flat.values(layer);
            System.arraycopy(z, 0, probs, at, z.length);
            at += z.length;
        }
        double[] tokens = new double[numExperts];
        double[] meanProb = new double[numExperts];
        int[] chosen = new int[topK];
        for (int n = 0; n < rows; n++) {
            int p = n * numExperts;
            Softmax.row(probs, p, numExperts, false);
            TopK.select(probs, p, numExperts, topK, null, chosen, 0);
            for (int best : chosen) {
                tokens[best] += 1.0;
            }
            for (int e = 0; e < numExperts; e++) {
                meanProb[e] += probs[p + e];
            }
        }
        for (int e = 0; e < numExperts; e++) {
            tokens[e] /= rows;                                                     // torch.mean over tokens
            meanProb[e] /= rows;
        }
        return new Stats(probs, tokens, meanProb, rows);
    }
}
