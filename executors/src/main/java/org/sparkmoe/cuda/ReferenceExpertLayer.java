package org.sparkmoe.cuda;

import java.nio.FloatBuffer;

/**
 * {@link ExpertLayer}'s contract in float64 on the host, written as plain loops from the formulas (no grouped GEMM,
 * no packing): what the CPU tests of the glue around an expert layer and the GPU check compare against. Holds every
 * weight as a Java array: small shapes only.
 */
public final class ReferenceExpertLayer implements ExpertLayer {
    private final int experts;
    private final int hidden;
    private final int intermediate;
    private final int rank;
    private final double scale;
    private final float[] w1;     // [E, I, D]
    private final float[] w3;     // [E, I, D]
    private final float[] w2;     // [E, D, I]
    private float[] a1, b1, a3, b3, a2, b2;
    private Plan plan;            // the last forward's, and what its backward reads
    private double[] xs, h1, h3, act, ys;   // [N, D], [N, I] ×3, [N, D]
    private boolean closed;

    /** w1, w3 [E, I, D] and w2 [E, D, I], copied. */
    public ReferenceExpertLayer(int experts, int hidden, int intermediate, int rank, double scale, float[] w1,
                                float[] w3, float[] w2) {
        long n = (long) experts * intermediate * hidden;
        if (w1.length != n || w3.length != n || w2.length != n) {
            throw new IllegalArgumentException("weights must hold E·I·D = " + n + " values each, got " + w1.length
                    + ", " + w3.length + ", " + w2.length);
        }
        this.experts = experts;
        this.hidden = hidden;
        this.intermediate = intermediate;
        this.rank = rank;
        this.scale = scale;
        this.w1 = w1.clone();
        this.w3 = w3.clone();
        this.w2 = w2.clone();
    }

    @Override
    public int experts() {
        return experts;
    }

    @Override
    public int hidden() {
        return hidden;
    }

    @Override
    public int intermediate() {
        return intermediate;
    }

    @Override
    public int rank() {
        return rank;
    }

    /** Whether {@link #close()} ran. */
    public boolean closed() {
        return closed;
    }

    @Override
    public void setLora(FloatBuffer a1, FloatBuffer b1, FloatBuffer a3, FloatBuffer b3, FloatBuffer a2,
                        FloatBuffer b2) {
        int e = experts;
        this.a1 = read(a1, e * rank * hidden);
        this.b1 = read(b1, e * intermediate * rank);
        this.a3 = read(a3, e * rank * hidden);
        this.b3 = read(b3, e * intermediate * rank);
        this.a2 = read(a2, e * rank * intermediate);
        this.b2 = read(b2, e * hidden * rank);
    }

    private static float[] read(FloatBuffer b, int n) {
        float[] v = new float[n];
        b.get(0, v, 0, n);
        return v;
    }

    @Override
    public void forward(Plan p, FloatBuffer x, FloatBuffer out) {
        int n = p.rows();
        int d = hidden;
        int i = intermediate;
        plan = p;
        xs = new double[n * d];
        h1 = new double[n * i];
        h3 = new double[n * i];
        act = new double[n * i];
        ys = new double[n * d];
        for (int e = 0; e < experts; e++) {
            for (int row = p.offsets()[e]; row < p.offsets()[e + 1]; row++) {
                int t = p.tokenOfRow()[row];
                for (int c = 0; c < d; c++) {
                    xs[row * d + c] = x.get(t * d + c);
                }
                project(e, xs, row, d, w1, a1, b1, i, h1);
                project(e, xs, row, d, w3, a3, b3, i, h3);
                for (int c = 0; c < i; c++) {
                    double g = h1[row * i + c];
                    act[row * i + c] = g / (1 + Math.exp(-g)) * h3[row * i + c];
                }
                project(e, act, row, i, w2, a2, b2, d, ys);
            }
        }
        double[] sum = new double[p.tokens() * d];
        int[] rowOfPair = rowOfPair(p);
        for (int pair = 0; pair < n; pair++) {              // t·K + k: each token's rows in slot order
            int row = rowOfPair[pair];
            int t = pair / p.topK();
            for (int c = 0; c < d; c++) {
                sum[t * d + c] += p.weightOfRow()[row] * ys[row * d + c];
            }
        }
        for (int k = 0; k < sum.length; k++) {
            out.put(k, (float) sum[k]);
        }
    }

    /** y[row] = in[row]·Wₑᵀ + s·(in[row]·Aₑᵀ)·Bₑᵀ for W [E, out, in], A [E, R, in], B [E, out, R]. */
    private void project(int e, double[] in, int row, int inDim, float[] w, float[] a, float[] b, int outDim,
                         double[] y) {
        double[] u = new double[rank];
        for (int r = 0; r < rank; r++) {
            double s = 0;
            for (int c = 0; c < inDim; c++) {
                s += in[row * inDim + c] * a[(e * rank + r) * inDim + c];
            }
            u[r] = scale * s;
        }
        for (int o = 0; o < outDim; o++) {
            double s = 0;
            for (int c = 0; c < inDim; c++) {
                s += in[row * inDim + c] * w[(e * outDim + o) * inDim + c];
            }
            for (int r = 0; r < rank; r++) {
                s += u[r] * b[(e * outDim + o) * rank + r];
            }
            y[row * outDim + o] = s;
        }
    }

    private static int[] rowOfPair(Plan p) {
        int[] rowOfPair = new int[p.rows()];
        for (int row = 0; row < p.rows(); row++) {
            rowOfPair[p.perm()[row]] = row;
        }
        return rowOfPair;
    }

    @Override
    public void backward(FloatBuffer dOut, FloatBuffer dx, Gradients into) {
        if (plan == null) {
            throw new IllegalStateException("a backward needs a forward first");
        }
        Plan p = plan;
        int d = hidden;
        int i = intermediate;
        double[] da1 = new double[experts * rank * d];
        double[] db1 = new double[experts * i * rank];
        double[] da3 = new double[experts * rank * d];
        double[] db3 = new double[experts * i * rank];
        double[] da2 = new double[experts * rank * i];
        double[] db2 = new double[experts * d * rank];
        double[] sumDx = new double[p.tokens() * d];
        for (int e = 0; e < experts; e++) {
            for (int row = p.offsets()[e]; row < p.offsets()[e + 1]; row++) {
                int t = p.tokenOfRow()[row];
                double gate = p.weightOfRow()[row];
                double[] dys = new double[d];
                double dGate = 0;
                for (int c = 0; c < d; c++) {
                    double g = dOut.get(t * d + c);
                    dys[c] = gate * g;
                    dGate += g * ys[row * d + c];
                }
                into.dGates().put(row, (float) dGate);
                double[] dAct = projectBack(e, act, row, i, w2, a2, b2, d, dys, da2, db2);
                double[] dh1 = new double[i];
                double[] dh3 = new double[i];
                for (int c = 0; c < i; c++) {
                    double g = h1[row * i + c];
                    double sig = 1 / (1 + Math.exp(-g));
                    double silu = g * sig;
                    dh3[c] = dAct[c] * silu;
                    dh1[c] = dAct[c] * h3[row * i + c] * sig * (1 + g * (1 - sig));
                }
                double[] dxs1 = projectBack(e, xs, row, d, w1, a1, b1, i, dh1, da1, db1);
                double[] dxs3 = projectBack(e, xs, row, d, w3, a3, b3, i, dh3, da3, db3);
                for (int c = 0; c < d; c++) {
                    sumDx[t * d + c] += dxs1[c] + dxs3[c];
                }
            }
        }
        for (int k = 0; k < sumDx.length; k++) {
            dx.put(k, (float) sumDx[k]);
        }
        write(da1, into.dA1());
        write(db1, into.dB1());
        write(da3, into.dA3());
        write(db3, into.dB3());
        write(da2, into.dA2());
        write(db2, into.dB2());
    }

    /**
     * The backward of {@link #project} for one row: adds dA, dB and returns d(in[row]) from dy [out].
     */
    private double[] projectBack(int e, double[] in, int row, int inDim, float[] w, float[] a, float[] b, int outDim,
                                 double[] dy, double[] dA, double[] dB) {
        double[] u = new double[rank];          // s·in·Aᵀ
        for (int r = 0; r < rank; r++) {
            double s = 0;
            for (int c = 0; c < inDim; c++) {
                s += in[row * inDim + c] * a[(e * rank + r) * inDim + c];
            }
            u[r] = scale * s;
        }
        double[] du = new double[rank];         // dy·B
        for (int o = 0; o < outDim; o++) {
            for (int r = 0; r < rank; r++) {
                dB[(e * outDim + o) * rank + r] += dy[o] * u[r];
                du[r] += dy[o] * b[(e * outDim + o) * rank + r];
            }
        }
        double[] dIn = new double[inDim];
        for (int c = 0; c < inDim; c++) {
            double s = 0;
            for (int o = 0; o < outDim; o++) {
                s += dy[o] * w[(e * outDim + o) * inDim + c];
            }
            for (int r = 0; r < rank; r++) {
                s += scale * du[r] * a[(e * rank + r) * inDim + c];
                dA[(e * rank + r) * inDim + c] += scale * du[r] * in[row * inDim + c];
            }
            dIn[c] = s;
        }
        return dIn;
    }

    private static void write(double[] v, FloatBuffer into) {
        for (int k = 0; k < v.length; k++) {
            into.put(k, (float) v[k]);
        }
    }

    @Override
    public void close() {
        closed = true;
    }
}
