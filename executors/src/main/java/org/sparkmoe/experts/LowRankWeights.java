package org.sparkmoe.experts;

import java.util.Arrays;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.kernels.GatedActivation;

/**
 * The weights of low-rank experts: the frozen base SwiGLU weights every token uses and the LoRA experts of the
 * three projections, and for gpt-oss each expert's frozen biases and the clamped gate. One data type for all arrays
 * (float32 for speed, float64 for gradient checks).
 *
 * @param w1         [I, D] frozen gate_proj
 * @param w3         [I, D] frozen up_proj
 * @param w2         [D, I] frozen down_proj
 * @param adapters   the LoRA experts of the three projections
 * @param c1         [E, I] frozen gate bias per expert, or null (all three or none)
 * @param c3         [E, I] frozen up bias per expert, or null
 * @param c2         [E, D] frozen down bias per expert, or null
 * @param activation act = f(h1, h3): SwiGLU, or gpt-oss's clamped gate
 */
public record LowRankWeights(INDArray w1, INDArray w3, INDArray w2, LowRankAdapters adapters, INDArray c1,
                             INDArray c3, INDArray c2, GatedActivation activation) {

    public LowRankWeights {
        int d = (int) w1.size(1);
        int i = (int) w1.size(0);
        expect("w1", w1, i, d);
        expect("w3", w3, i, d);
        expect("w2", w2, d, i);
        if (adapters.a1.size(2) != d || adapters.b1.size(1) != i) {
            throw new IllegalArgumentException("low-rank adapters are for D=" + adapters.a1.size(2) + ", I="
                    + adapters.b1.size(1) + " but the base FFN has D=" + d + ", I=" + i);
        }
        for (INDArray t : new INDArray[] {w3, w2}) {
            if (t.dataType() != w1.dataType()) {
                throw new IllegalArgumentException("low-rank base weights mix data types: w1 is " + w1.dataType()
                        + ", found " + t.dataType());
            }
        }
        if (adapters.dataType() != w1.dataType()) {
            throw new IllegalArgumentException("low-rank adapters are " + adapters.dataType()
                    + " but the base weights are " + w1.dataType());
        }
        if ((c1 == null) != (c3 == null) || (c1 == null) != (c2 == null)) {
            throw new IllegalArgumentException("low-rank expert biases come all three (gate, up, down) or none");
        }
        checkBias("c1 (gate bias)", c1, adapters.experts(), i, w1.dataType());
        checkBias("c3 (up bias)", c3, adapters.experts(), i, w1.dataType());
        checkBias("c2 (down bias)", c2, adapters.experts(), d, w1.dataType());
    }

    private static void checkBias(String name, INDArray b, long e, long n, DataType dt) {
        if (b != null && (!Arrays.equals(b.shape(), new long[] {e, n}) || b.dataType() != dt)) {
            throw new IllegalArgumentException("low-rank expert " + name + " must be [" + e + ", " + n + "] " + dt
                    + ", got " + Arrays.toString(b.shape()) + " " + b.dataType());
        }
    }

    /** SwiGLU low-rank experts without biases. */
    public LowRankWeights(INDArray w1, INDArray w3, INDArray w2, LowRankAdapters adapters) {
        this(w1, w3, w2, adapters, null, null, null, GatedActivation.SWIGLU);
    }

    private static void expect(String name, INDArray t, long... shape) {
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("low-rank base " + name + " must be " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()));
        }
    }

    /** The same base with other adapters. */
    public LowRankWeights withAdapters(LowRankAdapters a) {
        return new LowRankWeights(w1, w3, w2, a, c1, c3, c2, activation);
    }

    /**
     * gpt-oss: the same weights with the experts' biases as gpt-oss stores them and its clamped gate.
     *
     * @param gateUp [E, 2I] gate bias k at column 2k, up bias k at 2k + 1
     * @param down   [E, D]
     */
    public LowRankWeights withInterleavedBiases(INDArray gateUp, INDArray down) {
        long i2 = gateUp.size(1);
        return new LowRankWeights(w1, w3, w2, adapters,
                gateUp.get(NDArrayIndex.all(), NDArrayIndex.interval(0, 2, i2)).dup('c'),             // [E, I]
                gateUp.get(NDArrayIndex.all(), NDArrayIndex.interval(1, 2, i2)).dup('c'),             // [E, I]
                down, GatedActivation.CLAMPED_SWIGLU);
    }

    /** Whether the experts carry biases (gpt-oss). */
    public boolean hasBiases() {
        return c1 != null;
    }

    /** Random weights from one seed: base U(−1/√in, 1/√in), A and B U(−loraBound, loraBound). */
    public static LowRankWeights random(int d, int i, int e, int r, double scale, double loraBound, DataType dt,
            long seed) {
        Random rnd = new Random(seed);
        INDArray w1 = LowRankAdapters.uniform(rnd, dt, 1 / Math.sqrt(d), i, d);
        INDArray w3 = LowRankAdapters.uniform(rnd, dt, 1 / Math.sqrt(d), i, d);
        INDArray w2 = LowRankAdapters.uniform(rnd, dt, 1 / Math.sqrt(i), d, i);
        LowRankAdapters adapters = LowRankAdapters.random(d, i, e, r, scale, loraBound, dt, rnd.nextLong());
        return new LowRankWeights(w1, w3, w2, adapters);
    }

    /** The same weights with random expert biases U(−bound, bound) from {@code seed} and activation {@code f}. */
    public LowRankWeights withRandomBiases(GatedActivation f, double bound, long seed) {
        Random rnd = new Random(seed);
        int e = experts();
        return new LowRankWeights(w1, w3, w2, adapters,
                LowRankAdapters.uniform(rnd, dataType(), bound, e, intermediate()),
                LowRankAdapters.uniform(rnd, dataType(), bound, e, intermediate()),
                LowRankAdapters.uniform(rnd, dataType(), bound, e, hidden()), f);
    }

    public int hidden() {
        return (int) w1.size(1);
    }

    public int intermediate() {
        return (int) w1.size(0);
    }

    public int experts() {
        return adapters.experts();
    }

    public int rank() {
        return adapters.rank();
    }

    public DataType dataType() {
        return w1.dataType();
    }

    /** Frozen base parameters: 3·I·D. */
    public static long baseParameters(long d, long i) {
        return 3 * i * d;
    }

    /** Trainable parameters: LoRA 3·E·R·(D + I) plus router E·D. */
    public static long trainableParameters(long d, long i, long e, long r) {
        return 3 * e * r * (d + i) + e * d;
    }

    /**
     * Parameters of the equivalent dense MoE with E full SwiGLU experts (3·E·I·D) plus its router: what the
     * low-rank form replaces ("100× more experts in the same memory").
     */
    public static long denseMoeParameters(long d, long i, long e) {
        return 3 * e * i * d + e * d;
    }
}
