package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.routing.Routes;

/**
 * The reference for {@link CpExperts}: every expert's weights W_{P,e} = U_O·diag(U_N[e])·U_Iᵀ materialised
 * ([I, D], [I, D], [D, I]; small sizes only), then token by token and slot by slot
 * {@code out[t] += g_{t,k}·W2_e·(silu(W1_e·x_t) ⊙ (W3_e·x_t))} ({@link MaterialisedExperts}) — the MoE of the
 * materialised experts, independent of the factorised algebra and of the routing plan; its backward accumulates every
 * expert's dense dW_{P,e} and maps it to the factors by the product rule of W_e = U_O·diag(U_N[e])·U_Iᵀ.
 */
public final class CpExpertsNaive {
    private final MaterialisedExperts experts;
    private final CpFactors[] factors;   // w1, w3, w2

    public CpExpertsNaive(CpFactors gate, CpFactors up, CpFactors down) {
        factors = new CpFactors[] {gate, up, down};
        experts = MaterialisedExperts.of(gate, up, down, gate.expertCount(), CpFactors::weight);
    }

    /** x [T, D] routed by {@code routes} → out [T, D] in x's type. */
    public INDArray forward(INDArray x, Routes routes) {
        return experts.forward(x, routes);
    }

    /**
     * The gradients of {@code Σ forward(x, routes) ⊙ dOut}: the materialised experts' dense dW_e
     * ({@link MaterialisedExperts#backward}), then per projection dU_N[e] = diag(U_Oᵀ·dW_e·U_I),
     * dU_O = Σ_e dW_e·U_I·diag(U_N[e]), dU_I = Σ_e dW_eᵀ·U_O·diag(U_N[e]).
     *
     * @param x    [T, D]
     * @param dOut [T, D]
     * @return dx [T, D], dL/dg per pair and the factors' gradients ({@link ExpertGradients#cp()})
     */
    public ExpertGradients backward(INDArray x, Routes routes, INDArray dOut) {
        DataType dt = x.dataType();
        MaterialisedExperts.Gradients dense = experts.backward(x, routes, dOut);
        CpFactors[] grads = new CpFactors[3];
        for (int p = 0; p < 3; p++) {
            CpFactors f = factors[p];
            INDArray[] dw = dense.dW()[p];                                              // E × dW_e
            INDArray dExperts = Nd4j.zeros(dt, f.expertCount(), f.rank());            // [E, R]
            INDArray dIn = Nd4j.zeros(dt, f.inSize(), f.rank());                       // [in, R]
            INDArray dOutF = Nd4j.zeros(dt, f.outSize(), f.rank());                    // [out, R]
            for (int n = 0; n < dw.length; n++) {
                INDArray un = f.experts().getRow(n);                                   // [R]
                INDArray m = f.out().transpose().mmul(dw[n]).mmul(f.in());             // [R, R]
                for (int r = 0; r < f.rank(); r++) {
                    dExperts.putScalar(n, r, m.getDouble(r, r));
                }
                dOutF.addi(dw[n].mmul(f.in()).mulRowVector(un));                      // [out, R]
                dIn.addi(dw[n].transpose().mmul(f.out()).mulRowVector(un));           // [in, R]
            }
            grads[p] = new CpFactors(dExperts, dIn, dOutF);
        }
        return new ExpertGradients(dense.dx(), dense.dWeights(), null, null, null,
                new CpGradients(grads[0], grads[1], grads[2]), null);
    }
}
