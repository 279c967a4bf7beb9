package org.sparkmoe.mumoe;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The reference for {@link TrMumoe}: builds W [N_1·...·N_L, I, O] explicitly, one ring of L + 2 matrix slices per
 * entry, W(n, i, o) = trace(A_N1[:, n_1, :] ··· A_NL[:, n_L, :] · A_I[:, i, :] · A_O[:, o, :]) (flat:
 * Σ_{α,β,γ} A_N[α, n, β] · A_I[β, i, γ] · A_O[γ, o, α]), runs {@link Materialised} over it, and pulls dW back onto the
 * cores with loops: the derivative of trace(S_0 ··· S_{L+1}) by slice S_k is (S_{k+1} ··· S_{L+1} · S_0 ··· S_{k-1})ᵀ,
 * so for each entry
 * <pre>
 *   dS_k += dW[n, i, o] · (the ring's product after S_k, round to before it)ᵀ
 * </pre>
 * Small sizes only.
 */
public final class TrMumoeNaive implements MumoeLayer {
    private final TrWeights w;
    private final GateActivation activation;

    public TrMumoeNaive(TrWeights w, GateActivation activation) {
        this.w = w;
        this.activation = activation;
    }

    @Override
    public TrWeights weights() {
        return w;
    }

    /** The L + 2 cores in ring order, each [r_k, n_k, r_{k+1}] flattened in 'c' order. */
    private double[][] cores() {
        int levels = w.levels();
        double[][] c = new double[levels + 2][];
        for (int l = 0; l < levels; l++) {
            c[l] = Materialised.doubles(w.experts().get(l));
        }
        c[levels] = Materialised.doubles(w.in());
        c[levels + 1] = Materialised.doubles(w.out());
        return c;
    }

    /** n_k per core: N_1, ..., N_L, I, O. */
    private int[] modes() {
        int levels = w.levels();
        int[] n = new int[levels + 2];
        long[] dims = w.expertDims();
        for (int l = 0; l < levels; l++) {
            n[l] = (int) dims[l];
        }
        n[levels] = (int) w.inputSize();
        n[levels + 1] = (int) w.outputSize();
        return n;
    }

    /** The index of the ring's core k at W's entry (n, i, o) over the levels {@code dims} [N_1, ..., N_L]. */
    private static int index(int[] dims, int k, int e, int i, int o) {
        return k < dims.length ? Materialised.digit(dims, e, k) : k == dims.length ? i : o;
    }

    /** Slice j of core k, S[a][b] = core[a, j, b], as an r_k × r_{k+1} matrix. */
    private double[][] slice(double[] core, int k, int modes, int j) {
        int ra = (int) w.rank(k);
        int rb = (int) w.rank((k + 1) % (w.levels() + 2));
        double[][] s = new double[ra][rb];
        for (int a = 0; a < ra; a++) {
            for (int b = 0; b < rb; b++) {
                s[a][b] = core[(a * modes + j) * rb + b];
            }
        }
        return s;
    }

    /** The product of {@code ring}'s matrices from index {@code from}, {@code count} of them, cyclically. */
    private static double[][] product(double[][][] ring, int from, int count) {
        double[][] p = ring[from % ring.length];
        for (int c = 1; c < count; c++) {
            double[][] b = ring[(from + c) % ring.length];
            double[][] q = new double[p.length][b[0].length];
            for (int r = 0; r < p.length; r++) {
                for (int k = 0; k < b.length; k++) {
                    for (int s = 0; s < b[0].length; s++) {
                        q[r][s] += p[r][k] * b[k][s];
                    }
                }
            }
            p = q;
        }
        return p;
    }

    /** The slices of every core at W's entry (n, i, o); {@code dims} [N_1, ..., N_L] begins {@code modes}. */
    private double[][][] ring(double[][] cores, int[] modes, int[] dims, int e, int i, int o) {
        double[][][] ring = new double[cores.length][][];
        for (int k = 0; k < cores.length; k++) {
            ring[k] = slice(cores[k], k, modes[k], index(dims, k, e, i, o));
        }
        return ring;
    }

    private Materialised materialise(INDArray x) {
        int in = (int) w.inputSize();
        int out = (int) w.outputSize();
        double[][] cores = cores();
        int[] modes = modes();
        int[] dims = Arrays.copyOf(modes, w.levels());
        int experts = Math.toIntExact(w.materialisedExpertParameterCount() / ((long) in * out));
        double[] dense = new double[experts * in * out];
        for (int e = 0; e < experts; e++) {
            for (int i = 0; i < in; i++) {
                for (int o = 0; o < out; o++) {
                    double[][] p = product(ring(cores, modes, dims, e, i, o), 0, cores.length); // [r1, r1]
                    double s = 0;
                    for (int a = 0; a < p.length; a++) {
                        s += p[a][a];
                    }
                    dense[(e * in + i) * out + o] = s;
                }
            }
        }
        return new Materialised(x, w.gates(), activation, dense, in, out);
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
        int in = m.in;
        int out = m.out;
        int levels = w.levels();
        double[][] cores = cores();
        int[] modes = modes();
        int[] dims = m.dims;
        double[][] dCores = new double[cores.length][];
        for (int k = 0; k < cores.length; k++) {
            dCores[k] = new double[cores[k].length];
        }
        for (int e = 0; e < m.experts; e++) {
            for (int i = 0; i < in; i++) {
                for (int o = 0; o < out; o++) {
                    double d = b.dw()[(e * in + i) * out + o];
                    double[][][] ring = ring(cores, modes, dims, e, i, o);
                    for (int k = 0; k < cores.length; k++) {
                        double[][] rest = product(ring, k + 1, cores.length - 1); // [r_{k+1}, r_k]
                        int j = index(dims, k, e, i, o);
                        int rb = ring[k][0].length;
                        for (int a = 0; a < ring[k].length; a++) {
                            for (int c = 0; c < rb; c++) {
                                dCores[k][(a * modes[k] + j) * rb + c] += d * rest[c][a];
                            }
                        }
                    }
                }
            }
        }
        Map<String, INDArray> g = new LinkedHashMap<>();
        for (int l = 0; l < levels; l++) {
            g.put("gate." + l, Materialised.array(b.dGate().get(l), w.dataType(), in, m.dims[l]));
        }
        int k = 0;
        for (Map.Entry<String, INDArray> p : w.parameters().entrySet()) {
            if (!p.getKey().startsWith("gate.")) {               // the cores, in ring order
                g.put(p.getKey(), Materialised.array(dCores[k++], w.dataType(), p.getValue().shape()));
            }
        }
        return new MumoeGradients(g, Materialised.array(b.dx(), w.dataType(), pass.tokens(), in));
    }
}
