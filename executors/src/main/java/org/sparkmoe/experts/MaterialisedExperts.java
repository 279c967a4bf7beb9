package org.sparkmoe.experts;

import java.util.function.BiFunction;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.Routes;

/**
 * E SwiGLU experts held as materialised weights (small sizes only), run token by token and slot by slot
 * {@code out[t] += g_{t,k}·W2_e·(silu(W1_e·x_t) ⊙ (W3_e·x_t))}, independent of any factorised algebra and of the
 * routing plan: the references of the factorised experts ({@link CpExpertsNaive}, {@link TrExpertsNaive}), which map
 * the dense dW_e of {@link #backward} to their factors.
 */
final class MaterialisedExperts {
    private final INDArray[] w1;   // E × [I, D]
    private final INDArray[] w3;   // E × [I, D]
    private final INDArray[] w2;   // E × [D, I]

    private MaterialisedExperts(INDArray[] w1, INDArray[] w3, INDArray[] w2) {
        this.w1 = w1;
        this.w3 = w3;
        this.w2 = w2;
    }

    /**
     * The experts of three factorised projections, each expert's weights materialised by {@code weight}.
     *
     * @param gate   w1 (in D, out I)
     * @param up     w3 (in D, out I)
     * @param down   w2 (in I, out D)
     * @param weight W_e [out, in] of one projection's factors and expert e
     */
    static <F> MaterialisedExperts of(F gate, F up, F down, int experts, BiFunction<F, Integer, INDArray> weight) {
        INDArray[] w1 = new INDArray[experts];   // E × [I, D]
        INDArray[] w3 = new INDArray[experts];   // E × [I, D]
        INDArray[] w2 = new INDArray[experts];   // E × [D, I]
        for (int e = 0; e < experts; e++) {
            w1[e] = weight.apply(gate, e);
            w3[e] = weight.apply(up, e);
            w2[e] = weight.apply(down, e);
        }
        return new MaterialisedExperts(w1, w3, w2);
    }

    /**
     * The dense gradients of {@link #backward}.
     *
     * @param dx       [T, D]
     * @param dWeights [T·K] dL/dg per (token, slot) pair
     * @param dW       per projection (w1, w3, w2) E × dL/dW_e, in the weights' shapes
     */
    record Gradients(INDArray dx, double[] dWeights, INDArray[][] dW) {
    }

    /** x [T, D] routed by {@code routes} → out [T, D] in x's type. */
    INDArray forward(INDArray x, Routes routes) {
        DataType dt = x.dataType();
        INDArray out = Nd4j.zeros(dt, x.size(0), x.size(1));                          // [T, D]
        for (int t = 0; t < routes.tokens(); t++) {
            INDArray xt = x.getRow(t).reshape(-1, 1);                                  // [D, 1]
            for (int k = 0; k < routes.topK(); k++) {
                int e = routes.expert(t, k);
                INDArray act = Activations.swiGlu(w1[e].mmul(xt), w3[e].mmul(xt));       // [I, 1]
                INDArray y = w2[e].mmul(act).reshape(-1);                              // [D]
                out.getRow(t).addi(y.muli(routes.weight(t, k)));
            }
        }
        return out;
    }

    /**
     * The gradients of {@code Σ forward(x, routes) ⊙ dOut}, token by token and slot by slot: per pair dy = g·dOut[t],
     * dL/dg = dOut[t]·y, dW2_e += dy·actᵀ, dact = W2_eᵀ·dy, (dh1, dh3) = swiglu'·dact, dW1_e += dh1·x_tᵀ,
     * dW3_e += dh3·x_tᵀ, dx_t += W1_eᵀ·dh1 + W3_eᵀ·dh3.
     *
     * @param x    [T, D]
     * @param dOut [T, D]
     */
    Gradients backward(INDArray x, Routes routes, INDArray dOut) {
        DataType dt = x.dataType();
        int e = w1.length;
        INDArray[][] dw = new INDArray[3][e];                                           // per projection, E × dW_e
        for (int n = 0; n < e; n++) {
            dw[0][n] = Nd4j.zeros(dt, w1[n].shape());
            dw[1][n] = Nd4j.zeros(dt, w3[n].shape());
            dw[2][n] = Nd4j.zeros(dt, w2[n].shape());
        }
        INDArray dx = Nd4j.zeros(dt, x.size(0), x.size(1));                           // [T, D]
        double[] dWeights = new double[routes.tokens() * routes.topK()];
        for (int t = 0; t < routes.tokens(); t++) {
            INDArray xt = x.getRow(t).reshape(-1, 1);                                  // [D, 1]
            INDArray dOutT = dOut.getRow(t).reshape(-1, 1);                            // [D, 1]
            for (int k = 0; k < routes.topK(); k++) {
                int n = routes.expert(t, k);
                INDArray h1 = w1[n].mmul(xt);                                          // [I, 1]
                INDArray h3 = w3[n].mmul(xt);                                          // [I, 1]
                INDArray act = Activations.swiGlu(h1, h3);                             // [I, 1]
                INDArray y = w2[n].mmul(act);                                          // [D, 1]
                dWeights[t * routes.topK() + k] = dOutT.mul(y).sumNumber().doubleValue();
                INDArray dy = dOutT.mul(routes.weight(t, k));                          // [D, 1]
                dw[2][n].addi(dy.mmul(act.transpose()));                               // [D, I]
                INDArray dAct = w2[n].transpose().mmul(dy);                            // [I, 1]
                INDArray[] dh = Activations.swiGluBackward(h1, h3, dAct, Workers.SERIAL);
                dw[0][n].addi(dh[0].mmul(xt.transpose()));                             // [I, D]
                dw[1][n].addi(dh[1].mmul(xt.transpose()));                             // [I, D]
                dx.getRow(t).addi(w1[n].transpose().mmul(dh[0]).reshape(-1)
                        .addi(w3[n].transpose().mmul(dh[1]).reshape(-1)));
            }
        }
        return new Gradients(dx, dWeights, dw);
    }
}
