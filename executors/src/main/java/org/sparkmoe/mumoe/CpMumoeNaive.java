package org.sparkmoe.mumoe;

import java.util.LinkedHashMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The reference for {@link CpMumoe}: builds W [N_1, ..., N_L, I, O] explicitly,
 * W(n, i, o) = Σ_r Π_l U⁽ᴺˡ⁾[n_l, r] · U⁽ᴵ⁾[i, r] · U⁽ᴼ⁾[o, r], and runs {@link Materialised} over it; its backward
 * pulls dW back onto the factors with loops:
 * <pre>
 *   dU⁽ᴵ⁾[i, r]   = Σ_{n,o} dW[n, i, o] · Π_l U⁽ᴺˡ⁾[n_l, r] · U⁽ᴼ⁾[o, r]
 *   dU⁽ᴼ⁾[o, r]   = Σ_{n,i} dW[n, i, o] · Π_l U⁽ᴺˡ⁾[n_l, r] · U⁽ᴵ⁾[i, r]
 *   dU⁽ᴺˡ⁾[k, r]  = Σ_{n: n_l = k} Σ_{i,o} dW[n, i, o] · Π_{m≠l} U⁽ᴺᵐ⁾[n_m, r] · U⁽ᴵ⁾[i, r] · U⁽ᴼ⁾[o, r]
 * </pre>
 * Small sizes only.
 */
public final class CpMumoeNaive implements MumoeLayer {
    private final CpWeights w;
    private final GateActivation activation;

    public CpMumoeNaive(CpWeights w, GateActivation activation) {
        this.w = w;
        this.activation = activation;
    }

    @Override
    public CpWeights weights() {
        return w;
    }

    private Materialised materialise(INDArray x) {
        int in = (int) w.inputSize();
        int out = (int) w.outputSize();
        int rank = (int) w.rank();
        int experts = Math.toIntExact(w.materialisedExpertParameterCount() / ((long) in * out));
        double[] uIn = Materialised.doubles(w.in());
        double[] uOut = Materialised.doubles(w.out());
        double[] e = expertRows(experts, rank);
        double[] dense = new double[experts * in * out];
        for (int n = 0; n < experts; n++) {
            for (int i = 0; i < in; i++) {
                for (int o = 0; o < out; o++) {
                    double s = 0;
                    for (int r = 0; r < rank; r++) {
                        s += e[n * rank + r] * uIn[i * rank + r] * uOut[o * rank + r];
                    }
                    dense[(n * in + i) * out + o] = s;
                }
            }
        }
        return new Materialised(x, w.gates(), activation, dense, in, out);
    }

    /** E [N, R]: E[n, r] = Π_l U⁽ᴺˡ⁾[n_l, r], or with level {@code skip} left out of the product. */
    private double[] expertRows(int experts, int rank, int... skip) {
        long[] dims = w.expertDims();
        double[] e = new double[experts * rank];
        java.util.Arrays.fill(e, 1.0);
        int stride = experts;
        for (int l = 0; l < dims.length; l++) {
            stride /= (int) dims[l];
            if (skip.length > 0 && skip[0] == l) {
                continue;
            }
            double[] u = Materialised.doubles(w.experts().get(l));
            for (int n = 0; n < experts; n++) {
                int k = (n / stride) % (int) dims[l];
                for (int r = 0; r < rank; r++) {
                    e[n * rank + r] *= u[k * rank + r];
                }
            }
        }
        return e;
    }

    @Override
    public MumoePass forward(INDArray x) {
        MumoeShapes.requireInput(CpWeights.LAYER, x, w.inputSize(), w.dataType());
        Materialised m = materialise(x);
        INDArray y = Materialised.array(m.forward(), w.dataType(), x.size(0), w.outputSize());
        return new MumoePass(x, y, m.gates(w.dataType()), Map.of());
    }

    @Override
    public MumoeGradients backward(MumoePass pass, INDArray dy) {
        MumoeShapes.requireOutputGradient(CpWeights.LAYER, dy, pass.tokens(), w.outputSize(), w.dataType());
        Materialised m = materialise(pass.x());
        Materialised.Backward b = m.backward(Materialised.doubles(dy));
        int in = m.in;
        int out = m.out;
        int experts = m.experts;
        int rank = (int) w.rank();
        double[] uIn = Materialised.doubles(w.in());
        double[] uOut = Materialised.doubles(w.out());
        double[] e = expertRows(experts, rank);
        double[] dIn = new double[in * rank];
        double[] dOut = new double[out * rank];
        for (int n = 0; n < experts; n++) {
            for (int i = 0; i < in; i++) {
                for (int o = 0; o < out; o++) {
                    double d = b.dw()[(n * in + i) * out + o];
                    for (int r = 0; r < rank; r++) {
                        dIn[i * rank + r] += d * e[n * rank + r] * uOut[o * rank + r];
                        dOut[o * rank + r] += d * e[n * rank + r] * uIn[i * rank + r];
                    }
                }
            }
        }
        Map<String, INDArray> g = new LinkedHashMap<>();
        for (int l = 0; l < w.levels(); l++) {
            g.put("gate." + l, Materialised.array(b.dGate().get(l), w.dataType(), in, m.dims[l]));
        }
        for (int l = 0; l < w.levels(); l++) {
            double[] others = expertRows(experts, rank, l);
            double[] du = new double[m.dims[l] * rank];
            for (int n = 0; n < experts; n++) {
                int k = m.digit(n, l);
                for (int i = 0; i < in; i++) {
                    for (int o = 0; o < out; o++) {
                        double d = b.dw()[(n * in + i) * out + o];
                        for (int r = 0; r < rank; r++) {
                            du[k * rank + r] += d * others[n * rank + r] * uIn[i * rank + r] * uOut[o * rank + r];
                        }
                    }
                }
            }
            g.put("expert." + l, Materialised.array(du, w.dataType(), m.dims[l], rank));
        }
        g.put("in", Materialised.array(dIn, w.dataType(), in, rank));
        g.put("out", Materialised.array(dOut, w.dataType(), out, rank));
        return new MumoeGradients(g, Materialised.array(b.dx(), w.dataType(), pass.tokens(), in));
    }
}
