package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Activations;
import org.sparkmoe.routing.Routes;

/**
 * The reference for {@link TrExperts}: every expert's weights materialised element by element from the cores,
 * W_{P,e}[o, i] = Σ_{a,b,c} G_N[a, e, b]·G_I[b, i, c]·G_O[c, o, a] ([I, D], [I, D], [D, I]; small sizes only),
 * then token by token and slot by slot {@code out[t] += g_{t,k}·W2_e·(silu(W1_e·x_t) ⊙ (W3_e·x_t))} — the MoE of the
 * materialised experts, independent of the cores' matrix layouts and of the routing plan.
 */
public final class TrExpertsNaive {
    private final INDArray[] w1;   // E × [I, D]
    private final INDArray[] w3;   // E × [I, D]
    private final INDArray[] w2;   // E × [D, I]

    public TrExpertsNaive(TrFactors gate, TrFactors up, TrFactors down) {
        int e = gate.expertCount();
        w1 = new INDArray[e];
        w3 = new INDArray[e];
        w2 = new INDArray[e];
        for (int x = 0; x < e; x++) {
            w1[x] = weight(gate, x);
            w3[x] = weight(up, x);
            w2[x] = weight(down, x);
        }
    }

    /** W_e [out, in] by the triple sum over the ring, in float64, in the cores' type. */
    static INDArray weight(TrFactors f, int e) {
        INDArray n = f.experts().castTo(DataType.DOUBLE);
        INDArray in = f.in().castTo(DataType.DOUBLE);
        INDArray out = f.out().castTo(DataType.DOUBLE);
        INDArray w = Nd4j.zeros(DataType.DOUBLE, f.outSize(), f.inSize());
        for (int o = 0; o < f.outSize(); o++) {
            for (int i = 0; i < f.inSize(); i++) {
                double s = 0;
                for (int a = 0; a < f.r1(); a++) {
                    for (int b = 0; b < f.r2(); b++) {
                        for (int c = 0; c < f.r3(); c++) {
                            s += n.getDouble(a, e, b) * in.getDouble(b, i, c) * out.getDouble(c, o, a);
                        }
                    }
                }
                w.putScalar(o, i, s);
            }
        }
        return w.castTo(f.dataType());
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
