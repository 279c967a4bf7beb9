package org.sparkmoe.mumoe;

import java.util.ArrayList;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Softmax;

/**
 * The naive μMoE over an explicit weight tensor W [N, I, O] (N = Π N_l, expert index n = (n_1, ..., n_L) in
 * row-major order), in float64 with plain loops: the reference that the factorised layers are tested against.
 * Per token t:
 * <pre>
 *   a_l[t]   = φ(x[t]·G_l)                             // [N_l], φ softmax or entmax-1.5 ({@link GateActivation})
 *   α[t, n]  = Π_l a_l[t, n_l]                          // [N]   the mixture weight of expert n
 *   y[t, o]  = Σ_n α[t, n] Σ_i x[t, i] W[n, i, o]       // [O]
 * </pre>
 * Small sizes only: W has N·I·O entries.
 */
final class Materialised {
    final int tokens;
    final int in;
    final int out;
    final int[] dims;          // [N_1, ..., N_L]
    final int experts;         // N = Π N_l
    final double[] x;          // [T, I]
    final List<double[]> gate; // [I, N_l] per level
    final List<double[]> a;    // [T, N_l] per level
    final double[] alpha;      // [T, N]
    final double[] w;          // [N, I, O]
    private final GateActivation activation;

    /** Builds W's forward state; {@code w} is W [N, I, O] flattened in 'c' order. */
    Materialised(INDArray x, List<INDArray> gates, GateActivation activation, double[] w, int in, int out) {
        this.activation = activation;
        this.tokens = (int) x.size(0);
        this.in = in;
        this.out = out;
        this.x = doubles(x);
        this.dims = new int[gates.size()];
        this.gate = new ArrayList<>();
        this.a = new ArrayList<>();
        int n = 1;
        for (int l = 0; l < dims.length; l++) {
            dims[l] = (int) gates.get(l).size(1);
            n *= dims[l];
            double[] g = doubles(gates.get(l));
            gate.add(g);
            a.add(gate(this.x, g, tokens, in, dims[l], activation));
        }
        this.experts = n;
        this.w = w;
        this.alpha = new double[tokens * experts];
        for (int t = 0; t < tokens; t++) {
            for (int e = 0; e < experts; e++) {
                double v = 1;
                for (int l = 0; l < dims.length; l++) {
                    v *= a.get(l)[t * dims[l] + digit(e, l)];
                }
                alpha[t * experts + e] = v;
            }
        }
    }

    /** n_l of the expert with flat index e. */
    int digit(int e, int l) {
        return digit(dims, e, l);
    }

    /** n_l of the expert with flat index e among the levels {@code dims} [N_1, ..., N_L] (row-major). */
    static int digit(int[] dims, int e, int l) {
        int stride = 1;
        for (int m = l + 1; m < dims.length; m++) {
            stride *= dims[m];
        }
        return (e / stride) % dims[l];
    }

    static double[] doubles(INDArray a) {
        return a.castTo(DataType.DOUBLE).dup('c').data().asDouble();
    }

    /** a [T, N] = φ over each row of x·G, with explicit loops. */
    private static double[] gate(double[] x, double[] g, int tokens, int in, int n, GateActivation activation) {
        double[] z = new double[tokens * n];
        for (int t = 0; t < tokens; t++) {
            for (int k = 0; k < n; k++) {
                double s = 0;
                for (int i = 0; i < in; i++) {
                    s += x[t * in + i] * g[i * n + k];
                }
                z[t * n + k] = s;
            }
            if (activation == GateActivation.SOFTMAX) {
                Softmax.row(z, t * n, n, false);
            } else {
                Entmax15.row(z, t * n, n);
            }
        }
        return z;
    }

    /** y [T, O]. */
    double[] forward() {
        double[] y = new double[tokens * out];
        for (int t = 0; t < tokens; t++) {
            for (int e = 0; e < experts; e++) {
                double al = alpha[t * experts + e];
                for (int i = 0; i < in; i++) {
                    double ax = al * x[t * in + i];
                    int row = (e * in + i) * out;
                    for (int o = 0; o < out; o++) {
                        y[t * out + o] += ax * w[row + o];
                    }
                }
            }
        }
        return y;
    }

    List<INDArray> gates(DataType type) {
        List<INDArray> g = new ArrayList<>();
        for (int l = 0; l < dims.length; l++) {
            g.add(Nd4j.create(a.get(l), new long[] {tokens, dims[l]}, 'c').castTo(type));
        }
        return g;
    }

    /** dW [N, I, O], dL/dx [T, I] (through W and through the gates) and dL/dG_l [I, N_l] per level. */
    record Backward(double[] dw, double[] dx, List<double[]> dGate) {
    }

    /** The mirror of {@link #forward()}, given dy [T, O]. */
    Backward backward(double[] dy) {
        double[] dw = new double[experts * in * out];
        double[] dx = new double[tokens * in];
        double[] dAlpha = new double[tokens * experts];
        for (int t = 0; t < tokens; t++) {
            for (int e = 0; e < experts; e++) {
                double al = alpha[t * experts + e];
                double da = 0;
                for (int i = 0; i < in; i++) {
                    double xi = x[t * in + i];
                    int row = (e * in + i) * out;
                    double wdy = 0;
                    for (int o = 0; o < out; o++) {
                        double d = dy[t * out + o];
                        dw[row + o] += al * xi * d;
                        wdy += w[row + o] * d;
                    }
                    da += xi * wdy;
                    dx[t * in + i] += al * wdy;
                }
                dAlpha[t * experts + e] = da;
            }
        }
        List<double[]> dGate = new ArrayList<>();
        for (int l = 0; l < dims.length; l++) {
            int n = dims[l];
            double[] dz = new double[tokens * n];          // first da_l, then dz_l in place
            for (int t = 0; t < tokens; t++) {
                for (int e = 0; e < experts; e++) {
                    double others = 1;
                    for (int m = 0; m < dims.length; m++) {
                        if (m != l) {
                            others *= a.get(m)[t * dims[m] + digit(e, m)];
                        }
                    }
                    dz[t * n + digit(e, l)] += dAlpha[t * experts + e] * others;
                }
                if (activation == GateActivation.SOFTMAX) {
                    Softmax.rowBackward(a.get(l), dz, t * n, n);
                } else {
                    Entmax15.rowBackward(a.get(l), dz, t * n, n);
                }
            }
            double[] g = gate.get(l);
            double[] dg = new double[in * n];
            for (int t = 0; t < tokens; t++) {
                for (int i = 0; i < in; i++) {
                    for (int k = 0; k < n; k++) {
                        dg[i * n + k] += x[t * in + i] * dz[t * n + k];
                        dx[t * in + i] += dz[t * n + k] * g[i * n + k];
                    }
                }
            }
            dGate.add(dg);
        }
        return new Backward(dw, dx, dGate);
    }

    static INDArray array(double[] v, DataType type, long... shape) {
        return Nd4j.create(v, shape, 'c').castTo(type);
    }
}
