package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.routing.Routes;

/**
 * The reference for {@link CpExperts}: every expert's weights W_{P,e} = U_O·diag(U_N[e])·U_Iᵀ materialised
 * ([I, D], [I, D], [D, I]; small sizes only), then token by token and slot by slot
 * {@code out[t] += g_{t,k}·W2_e·(silu(W1_e·x_t) ⊙ (W3_e·x_t))} — the MoE of the materialised experts, independent of
 * the factorised algebra and of the routing plan.
 */
public final class CpExpertsNaive {
    private final INDArray[] w1;   // E × [I, D]
    private final INDArray[] w3;   // E × [I, D]
    private final INDArray[] w2;   // E × [D, I]

    public CpExpertsNaive(CpFactors gate, CpFactors up, CpFactors down) {
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
}
