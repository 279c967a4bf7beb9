package org.sparkmoe.mumoe;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The reference for {@link TrMumoe}: builds W [N, I, O] explicitly,
 * W(n, i, o) = Σ_{α,β,γ} A_N[α, n, β] · A_I[β, i, γ] · A_O[γ, o, α] = trace(A_N[:, n, :]·A_I[:, i, :]·A_O[:, o, :]),
 * runs {@link Materialised} over it, and pulls dW back onto the cores with loops:
 * <pre>
 *   dA_N[α, n, β] = Σ_{i,o,γ} dW[n, i, o] · A_I[β, i, γ] · A_O[γ, o, α]
 *   dA_I[β, i, γ] = Σ_{n,o,α} dW[n, i, o] · A_N[α, n, β] · A_O[γ, o, α]
 *   dA_O[γ, o, α] = Σ_{n,i,β} dW[n, i, o] · A_N[α, n, β] · A_I[β, i, γ]
 * </pre>
 * Small sizes only.
 */
public final class TrMumoeNaive implements MumoeLayer {
    private final TrWeights w;

    public TrMumoeNaive(TrWeights w) {
        this.w = w;
    }

    @Override
    public TrWeights weights() {
        return w;
    }

    private Materialised materialise(INDArray x) {
        int n = (int) w.experts();
        int in = (int) w.inputSize();
        int out = (int) w.outputSize();
        int r1 = (int) w.r1();
        int r2 = (int) w.r2();
        int r3 = (int) w.r3();
        double[] an = Materialised.doubles(w.expert());
        double[] ai = Materialised.doubles(w.in());
        double[] ao = Materialised.doubles(w.out());
        double[] dense = new double[n * in * out];
        for (int e = 0; e < n; e++) {
            for (int i = 0; i < in; i++) {
                for (int o = 0; o < out; o++) {
                    double s = 0;
                    for (int al = 0; al < r1; al++) {
                        for (int be = 0; be < r2; be++) {
                            for (int ga = 0; ga < r3; ga++) {
                                s += an[(al * n + e) * r2 + be] * ai[(be * in + i) * r3 + ga]
                                        * ao[(ga * out + o) * r1 + al];
                            }
                        }
                    }
                    dense[(e * in + i) * out + o] = s;
                }
            }
        }
        return new Materialised(x, List.of(w.gate()), dense, in, out);
    }

    @Override
    public MumoePass forward(INDArray x) {
        MumoeShapes.requireInput(TrWeights.LAYER, x, w.inputSize(), w.dataType());
        Materialised m = materialise(x);
        INDArray y = Materialised.array(m.forward(), w.dataType(), x.size(0), w.outputSize());
        return new MumoePass(x, y, m.gates(w.dataType()), Map.of());
    }

    @Override
    public MumoeGradients backward(MumoePass pass, INDArray dy) {
        MumoeShapes.requireOutputGradient(TrWeights.LAYER, dy, pass.tokens(), w.outputSize(), w.dataType());
        Materialised m = materialise(pass.x());
        Materialised.Backward b = m.backward(Materialised.doubles(dy));
        int n = (int) w.experts();
        int in = (int) w.inputSize();
        int out = (int) w.outputSize();
        int r1 = (int) w.r1();
        int r2 = (int) w.r2();
        int r3 = (int) w.r3();
        double[] an = Materialised.doubles(w.expert());
        double[] ai = Materialised.doubles(w.in());
        double[] ao = Materialised.doubles(w.out());
        double[] dan = new double[an.length];
        double[] dai = new double[ai.length];
        double[] dao = new double[ao.length];
        for (int e = 0; e < n; e++) {
            for (int i = 0; i < in; i++) {
                for (int o = 0; o < out; o++) {
                    double d = b.dw()[(e * in + i) * out + o];
                    for (int al = 0; al < r1; al++) {
                        for (int be = 0; be < r2; be++) {
                            for (int ga = 0; ga < r3; ga++) {
                                int pn = (al * n + e) * r2 + be;
                                int pi = (be * in + i) * r3 + ga;
                                int po = (ga * out + o) * r1 + al;
                                dan[pn] += d * ai[pi] * ao[po];
                                dai[pi] += d * an[pn] * ao[po];
                                dao[po] += d * an[pn] * ai[pi];
                            }
                        }
                    }
                }
            }
        }
        Map<String, INDArray> g = new LinkedHashMap<>();
        g.put("gate.0", Materialised.array(b.dGate().get(0), w.dataType(), in, n));
        g.put("core.expert", Materialised.array(dan, w.dataType(), r1, n, r2));
        g.put("core.in", Materialised.array(dai, w.dataType(), r2, in, r3));
        g.put("core.out", Materialised.array(dao, w.dataType(), r3, out, r1));
        return new MumoeGradients(g, Materialised.array(b.dx(), w.dataType(), pass.tokens(), in));
    }
}
