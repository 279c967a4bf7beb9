package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.routing.Routes;

/**
 * The reference for {@link CpExperts}: every expert's weights W_{P,e} = U_O·diag(U_N[e])·U_Iᵀ materialised
 * ([I, D], [I, D], [D, I]; small sizes only), then token by token and slot by slot
 * {@code out[t] += g_{t,k}·W2_e·(silu(W1_e·x_t) ⊙ (W3_e·x_t))} — the MoE of the materialised experts, independent of
 * the factorised algebra and of the routing plan; its backward accumulates every expert's dense dW_{P,e} and maps
 * it to the factors by the product rule of W_e = U_O·diag(U_N[e])·U_Iᵀ.
 */
public final class CpExpertsNaive {
    private final INDArray[] w1;   // E × [I, D]
    private final INDArray[] w3;   // E × [I, D]
    private final INDArray[] w2;   // E × [D, I]
    private final CpFactors[] factors;   // w1, w3, w2

    public CpExpertsNaive(CpFactors gate, CpFactors up, CpFactors down) {
        factors = new CpFactors[] {gate, up, down};
        int e = gate.expertCount();
        w1 = new INDArray[e];
        w3 = new INDArray[e];
        w2 = new INDArray[e];
        for (int x = 0; x < e; x++) {
            w1[x] = gate.weight(x);
            w3[x] = up.weight(x);
            w2[x] = down.weight(x);
        }
    }

    /** x [T, D] routed by {@code routes} → out [T, D] in x's type. */
    public INDArray forward(INDArray x, Routes routes) {
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
     * The gradients of {@code Σ forward(x, routes) ⊙ dOut}, token by token and slot by slot through the materialised
     * weights: per pair dy = g·dOut[t], dL/dg = dOut[t]·y, dW2_e += dy·actᵀ, dact = W2_eᵀ·dy, (dh1, dh3) = swiglu'·dact,
     * dW1_e += dh1·x_tᵀ, dW3_e += dh3·x_tᵀ, dx_t += W1_eᵀ·dh1 + W3_eᵀ·dh3; then per projection
     * dU_N[e] = diag(U_Oᵀ·dW_e·U_I), dU_O = Σ_e dW_e·U_I·diag(U_N[e]), dU_I = Σ_e dW_eᵀ·U_O·diag(U_N[e]).
     *
     * @param x    [T, D]
     * @param dOut [T, D]
     * @return dx [T, D], dL/dg per pair and the factors' gradients ({@link ExpertGradients#cp()})
     */
    public ExpertGradients backward(INDArray x, Routes routes, INDArray dOut) {
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
        CpFactors[] grads = new CpFactors[3];
        for (int p = 0; p < 3; p++) {
            CpFactors f = factors[p];
            INDArray dExperts = Nd4j.zeros(dt, f.expertCount(), f.rank());            // [E, R]
            INDArray dIn = Nd4j.zeros(dt, f.inSize(), f.rank());                       // [in, R]
            INDArray dOutF = Nd4j.zeros(dt, f.outSize(), f.rank());                    // [out, R]
            for (int n = 0; n < e; n++) {
                INDArray un = f.experts().getRow(n);                                   // [R]
                INDArray m = f.out().transpose().mmul(dw[p][n]).mmul(f.in());          // [R, R]
                for (int r = 0; r < f.rank(); r++) {
                    dExperts.putScalar(n, r, m.getDouble(r, r));
                }
                dOutF.addi(dw[p][n].mmul(f.in()).mulRowVector(un));                   // [out, R]
                dIn.addi(dw[p][n].transpose().mmul(f.out()).mulRowVector(un));        // [in, R]
            }
            grads[p] = new CpFactors(dExperts, dIn, dOutF);
        }
        return new ExpertGradients(dx, dWeights, null, null, null, new CpGradients(grads[0], grads[1], grads[2]));
    }
}
