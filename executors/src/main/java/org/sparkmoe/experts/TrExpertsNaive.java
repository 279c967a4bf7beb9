package org.sparkmoe.experts;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.routing.Routes;

/**
 * The reference for {@link TrExperts}: every expert's weights materialised element by element from the cores,
 * W_{P,e}[o, i] = Σ_{a,b,c} G_N[a, e, b]·G_I[b, i, c]·G_O[c, o, a] ([I, D], [I, D], [D, I]; small sizes only),
 * then token by token and slot by slot {@code out[t] += g_{t,k}·W2_e·(silu(W1_e·x_t) ⊙ (W3_e·x_t))}
 * ({@link MaterialisedExperts}) — the MoE of the materialised experts, independent of the cores' matrix layouts and
 * of the routing plan; its backward accumulates every expert's dense dW_{P,e} and maps it to the cores element by
 * element by the product rule of the same triple sum.
 */
public final class TrExpertsNaive {
    private final MaterialisedExperts experts;
    private final TrFactors[] cores;   // w1, w3, w2

    public TrExpertsNaive(TrFactors gate, TrFactors up, TrFactors down) {
        cores = new TrFactors[] {gate, up, down};
        experts = MaterialisedExperts.of(gate, up, down, gate.expertCount(), TrExpertsNaive::weight);
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
        return experts.forward(x, routes);
    }

    /**
     * The gradients of {@code Σ forward(x, routes) ⊙ dOut}: the materialised experts' dense dW_e
     * ({@link MaterialisedExperts#backward}), then per projection, element by element in float64,
     * <pre>
     *   dG_N[a, e, b] = Σ_{o,i,c} dW_e[o, i]·G_I[b, i, c]·G_O[c, o, a]
     *   dG_I[b, i, c] = Σ_{e,o,a} dW_e[o, i]·G_N[a, e, b]·G_O[c, o, a]
     *   dG_O[c, o, a] = Σ_{e,i,b} dW_e[o, i]·G_N[a, e, b]·G_I[b, i, c]
     * </pre>
     *
     * @param x    [T, D]
     * @param dOut [T, D]
     * @return dx [T, D], dL/dg per pair and the cores' gradients ({@link ExpertGradients#tr()})
     */
    public ExpertGradients backward(INDArray x, Routes routes, INDArray dOut) {
        MaterialisedExperts.Gradients dense = experts.backward(x, routes, dOut);
        TrFactors[] grads = new TrFactors[3];
        for (int p = 0; p < 3; p++) {
            grads[p] = coreGradients(cores[p], dense.dW()[p]);
        }
        return new ExpertGradients(dense.dx(), dense.dWeights(), null, null, null, null,
                new TrGradients(grads[0], grads[1], grads[2]));
    }

    /**
     * @param dw E × dW_e [out, in]
     * @return dG_N, dG_I, dG_O in the cores' shapes and type
     */
    private static TrFactors coreGradients(TrFactors f, INDArray[] dw) {
        INDArray n = f.experts().castTo(DataType.DOUBLE);                               // [r1, E, r2]
        INDArray in = f.in().castTo(DataType.DOUBLE);                                   // [r2, in, r3]
        INDArray out = f.out().castTo(DataType.DOUBLE);                                 // [r3, out, r1]
        INDArray dn = Nd4j.zeros(DataType.DOUBLE, n.shape());
        INDArray dIn = Nd4j.zeros(DataType.DOUBLE, in.shape());
        INDArray dOut = Nd4j.zeros(DataType.DOUBLE, out.shape());
        for (int e = 0; e < dw.length; e++) {
            INDArray g = dw[e].castTo(DataType.DOUBLE);                                 // [out, in]
            for (int o = 0; o < f.outSize(); o++) {
                for (int i = 0; i < f.inSize(); i++) {
                    double gw = g.getDouble(o, i);
                    for (int a = 0; a < f.r1(); a++) {
                        for (int b = 0; b < f.r2(); b++) {
                            for (int c = 0; c < f.r3(); c++) {
                                double vn = n.getDouble(a, e, b);
                                double vi = in.getDouble(b, i, c);
                                double vo = out.getDouble(c, o, a);
                                dn.putScalar(new long[] {a, e, b}, dn.getDouble(a, e, b) + gw * vi * vo);
                                dIn.putScalar(new long[] {b, i, c}, dIn.getDouble(b, i, c) + gw * vn * vo);
                                dOut.putScalar(new long[] {c, o, a}, dOut.getDouble(c, o, a) + gw * vn * vi);
                            }
                        }
                    }
                }
            }
        }
        DataType dt = f.dataType();
        return new TrFactors(dn.castTo(dt), dIn.castTo(dt), dOut.castTo(dt));
    }
}
