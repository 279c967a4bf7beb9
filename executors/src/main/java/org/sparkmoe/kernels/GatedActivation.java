package org.sparkmoe.kernels;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The element-wise gate of an expert FFN, {@code act = f(h1, h3)} from the gate projection h1 and the up projection
 * h3, with its two partial derivatives. Values in float64; for a float32 computation every operation is rounded to
 * float32 where torch rounds ({@code single}). The scalar methods are the reference; the chunk methods run the same
 * operations on a whole chunk, SwiGLU's with the Vector API ({@link Exp}'s e^x, on its float64 lanes), giving the same
 * bits as the scalar methods element by element (ActivationsTest.swiGluChunksGiveTheScalarBits).
 */
public enum GatedActivation {
    /** SwiGLU (Mixtral, Qwen2/3-MoE, OLMoE): act = silu(h1)·h3, silu(z) = z·σ(z). */
    SWIGLU {
        @Override
        double forward(double z, double u, boolean single) {
            return Flat.round(Flat.round(z / (1.0 + Exp.exp(-z)), single) * u, single);
        }

        @Override
        void backward(double z, double u, double dAct, double[] out, int at) {
            double sig = 1.0 / (1.0 + Exp.exp(-z));
            out[at] = dAct * u * sig * (1.0 + z * (1.0 - sig));
            out[at + 1] = dAct * z * sig;
        }

        @Override
        void forwardLanes(double[] z, double[] u, double[] act, int n, boolean single) {
            int whole = wholeVectors(n);
            expOfMinus(z, act, whole);                                        // act = e^−z
            if (single) {                                  // one loop per precision: no vector merges two paths
                for (int i = 0; i < whole; i += LANES.length()) {
                    DoubleVector zv = DoubleVector.fromArray(LANES, z, i);
                    DoubleVector silu = VectorRows.round(zv.div(DoubleVector.fromArray(LANES, act, i).add(1.0)));
                    VectorRows.round(silu.mul(DoubleVector.fromArray(LANES, u, i))).intoArray(act, i);
                }
            } else {
                for (int i = 0; i < whole; i += LANES.length()) {
                    DoubleVector zv = DoubleVector.fromArray(LANES, z, i);
                    zv.div(DoubleVector.fromArray(LANES, act, i).add(1.0)).mul(DoubleVector.fromArray(LANES, u, i))
                            .intoArray(act, i);
                }
            }
        }

        @Override
        void backwardLanes(double[] z, double[] u, double[] dAct, double[] dz, double[] du, int n) {
            int whole = wholeVectors(n);
            expOfMinus(z, dz, whole);                                         // dz = e^−z, read before written
            for (int i = 0; i < whole; i += LANES.length()) {
                DoubleVector zv = DoubleVector.fromArray(LANES, z, i);
                DoubleVector d = DoubleVector.fromArray(LANES, dAct, i);
                DoubleVector sig = ONE.div(DoubleVector.fromArray(LANES, dz, i).add(1.0));
                DoubleVector slope = zv.mul(ONE.sub(sig)).add(1.0);
                d.mul(DoubleVector.fromArray(LANES, u, i)).mul(sig).mul(slope).intoArray(dz, i);
                d.mul(zv).mul(sig).intoArray(du, i);
            }
        }

        /** out[i] = e^−z[i] for i &lt; n (a multiple of the lanes): the negation, then {@link Exp}'s own pass. */
        private void expOfMinus(double[] z, double[] out, int n) {
            for (int i = 0; i < n; i += LANES.length()) {
                DoubleVector.fromArray(LANES, z, i).neg().intoArray(out, i);
            }
            Exp.expLanes(out, 0, out, 0, n, false);
        }
    },
    /**
     * gpt-oss (transformers' {@code GptOssExperts._apply_gate}): g = min(h1, 7), u = clamp(h3, −7, 7),
     * act = (u + 1)·g·σ(1.702·g). Clamped values pass no gradient (torch's clamp passes it where the value lies within
     * the bounds, ends included): dact/dh1 = (u + 1)·(σ + 1.702·g·σ(1 − σ)) for h1 ≤ 7, dact/dh3 = g·σ for |h3| ≤ 7.
     */
    CLAMPED_SWIGLU {
        @Override
        double forward(double z, double u, boolean single) {
            double g = Math.min(z, LIMIT);
            double up = Math.max(-LIMIT, Math.min(u, LIMIT));
            double sig = Flat.round(1.0 / (1.0 + Math.exp(-Flat.round(g * alpha(single), single))), single);
            double glu = Flat.round(g * sig, single);
            return Flat.round(Flat.round(up + 1.0, single) * glu, single);
        }

        @Override
        void backward(double z, double u, double dAct, double[] out, int at) {
            double g = Math.min(z, LIMIT);
            double up = Math.max(-LIMIT, Math.min(u, LIMIT));
            double sig = 1.0 / (1.0 + Math.exp(-ALPHA * g));
            out[at] = z <= LIMIT ? dAct * (up + 1.0) * (sig + ALPHA * g * sig * (1.0 - sig)) : 0.0;
            out[at + 1] = Math.abs(u) <= LIMIT ? dAct * g * sig : 0.0;
        }
    };

    /**
     * The lanes the chunk methods compute in. A chunk is processed in whole vectors, so every element, the last
     * ones included, takes the same path wherever a partition's chunks start: the arrays of a chunk of n elements
     * hold at least n rounded up to a multiple of {@link #LANE_MULTIPLE}; the lanes past n compute on whatever the
     * arrays hold there and are not used.
     */
    static final VectorSpecies<Double> LANES = Exp.SPECIES;
    /** Chunk arrays are at least n rounded up to this. */
    static final int LANE_MULTIPLE = LANES.length();

    /** n rounded up to whole vectors: what the chunk kernels compute. */
    static int wholeVectors(int n) {
        return (n + LANE_MULTIPLE - 1) / LANE_MULTIPLE * LANE_MULTIPLE;
    }
    private static final DoubleVector ONE = DoubleVector.broadcast(LANES, 1.0);
    /** gpt-oss's {@code limit} (transformers fixes it at 7.0). */
    public static final double LIMIT = 7.0;
    /** gpt-oss's {@code alpha}. */
    public static final double ALPHA = 1.702;

    /** α as the computation sees it: a Python float times a float32 tensor is a float32 product. */
    private static double alpha(boolean single) {
        return single ? (float) ALPHA : ALPHA;
    }

    /** act from the gate value z = h1 and the up value u = h3. */
    abstract double forward(double z, double u, boolean single);

    /** out[at] = dL/dh1, out[at + 1] = dL/dh3 given dL/dact. */
    abstract void backward(double z, double u, double dAct, double[] out, int at);

    /**
     * act[i] = forward(z[i], u[i]) for i &lt; n; each array holds n rounded up to {@link #LANE_MULTIPLE} (the
     * elements past n may be overwritten). The vector kernel once {@link VectorWarmup} says it is compiled, the scalar
     * loop before: the same bits either way.
     */
    final void forward(double[] z, double[] u, double[] act, int n, boolean single) {
        if (VectorWarmup.ready()) {
            forwardLanes(z, u, act, n, single);
        } else {
            forwardScalar(z, u, act, n, single);
        }
    }

    /** dz[i], du[i] = backward(z[i], u[i], dAct[i]) for i &lt; n; arrays and kernels as in the chunk {@link #forward}. */
    final void backward(double[] z, double[] u, double[] dAct, double[] dz, double[] du, int n) {
        if (VectorWarmup.ready()) {
            backwardLanes(z, u, dAct, dz, du, n);
        } else {
            backwardScalar(z, u, dAct, dz, du, n);
        }
    }

    /** The chunk {@link #forward} with the Vector API where this activation has a vector kernel. */
    void forwardLanes(double[] z, double[] u, double[] act, int n, boolean single) {
        forwardScalar(z, u, act, n, single);
    }

    /** The chunk {@link #backward} with the Vector API where this activation has a vector kernel. */
    void backwardLanes(double[] z, double[] u, double[] dAct, double[] dz, double[] du, int n) {
        backwardScalar(z, u, dAct, dz, du, n);
    }

    final void forwardScalar(double[] z, double[] u, double[] act, int n, boolean single) {
        for (int i = 0; i < n; i++) {
            act[i] = forward(z[i], u[i], single);
        }
    }

    final void backwardScalar(double[] z, double[] u, double[] dAct, double[] dz, double[] du, int n) {
        double[] pair = new double[2];
        for (int i = 0; i < n; i++) {
            backward(z[i], u[i], dAct[i], pair, 0);
            dz[i] = pair[0];
            du[i] = pair[1];
        }
    }
}
