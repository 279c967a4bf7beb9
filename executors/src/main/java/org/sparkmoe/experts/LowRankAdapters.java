package org.sparkmoe.experts;

import java.util.Arrays;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The E LoRA experts of each projection of low-rank experts (a shared base FFN plus E LoRA experts), Hugging Face
 * Linear layout:
 * {@code ΔW_{P,e} = scale · B_{P,e} · A_{P,e}}. Gate (w1) and up (w3) map D → I, down (w2) maps I → D.
 * A small holder of its own (not the per-expert LoRA classes): the arrays, the scale, their shapes.
 */
public final class LowRankAdapters {
    public final INDArray a1;  // [E, R, D]  gate_proj shrink
    public final INDArray b1;  // [E, I, R]  gate_proj expand
    public final INDArray a3;  // [E, R, D]  up_proj shrink
    public final INDArray b3;  // [E, I, R]  up_proj expand
    public final INDArray a2;  // [E, R, I]  down_proj shrink
    public final INDArray b2;  // [E, D, R]  down_proj expand
    public final double scale; // α / R

    public LowRankAdapters(INDArray a1, INDArray b1, INDArray a3, INDArray b3, INDArray a2, INDArray b2,
            double scale) {
        this.a1 = a1;
        this.b1 = b1;
        this.a3 = a3;
        this.b3 = b3;
        this.a2 = a2;
        this.b2 = b2;
        this.scale = scale;
        int e = experts();
        int r = rank();
        int d = (int) a1.size(2);
        int i = (int) b1.size(1);
        expect("a1", a1, e, r, d);
        expect("b1", b1, e, i, r);
        expect("a3", a3, e, r, d);
        expect("b3", b3, e, i, r);
        expect("a2", a2, e, r, i);
        expect("b2", b2, e, d, r);
        for (INDArray t : new INDArray[] {b1, a3, b3, a2, b2}) {
            if (t.dataType() != a1.dataType()) {
                throw new IllegalArgumentException("low-rank adapters mix data types: a1 is " + a1.dataType()
                        + ", found " + t.dataType());
            }
        }
    }

    private static void expect(String name, INDArray t, long... shape) {
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("low-rank adapter " + name + " must be " + Arrays.toString(shape)
                    + " [E, out, in], got " + Arrays.toString(t.shape()));
        }
    }

    public int experts() {
        return (int) a1.size(0);
    }

    public int rank() {
        return (int) a1.size(1);
    }

    public DataType dataType() {
        return a1.dataType();
    }

    /** Trainable parameters: E·R·(D + I) for each of the three projections. */
    public long parameterCount() {
        return a1.length() + b1.length() + a3.length() + b3.length() + a2.length() + b2.length();
    }

    /**
     * PEFT initialisation from one seed: every A Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in), B zero
     * (so the block starts as the base FFN); scale = α / R.
     */
    public static LowRankAdapters peftInit(int d, int i, int e, int r, double alpha, DataType dt, long seed) {
        Random rnd = new Random(seed);
        INDArray zeroI = Nd4j.zeros(dt, e, i, r);
        return new LowRankAdapters(uniform(rnd, dt, 1 / Math.sqrt(d), e, r, d), zeroI,
                uniform(rnd, dt, 1 / Math.sqrt(d), e, r, d), zeroI.dup(),
                uniform(rnd, dt, 1 / Math.sqrt(i), e, r, i), Nd4j.zeros(dt, e, d, r), alpha / r);
    }

    /** Every A and B drawn U(−bound, bound) from one seed (tests and benchmarks need B ≠ 0). */
    public static LowRankAdapters random(int d, int i, int e, int r, double scale, double bound, DataType dt,
            long seed) {
        Random rnd = new Random(seed);
        return new LowRankAdapters(uniform(rnd, dt, bound, e, r, d), uniform(rnd, dt, bound, e, i, r),
                uniform(rnd, dt, bound, e, r, d), uniform(rnd, dt, bound, e, i, r),
                uniform(rnd, dt, bound, e, r, i), uniform(rnd, dt, bound, e, d, r), scale);
    }

    /** Arrays of the given shape filled U(−bound, bound) from {@code rnd}, in data type {@code dt}. */
    static INDArray uniform(Random rnd, DataType dt, double bound, long... shape) {
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        double[] v = new double[Math.toIntExact(n)];
        for (int k = 0; k < v.length; k++) {
            v[k] = (2 * rnd.nextDouble() - 1) * bound;
        }
        return Nd4j.create(v, shape, DataType.DOUBLE).castTo(dt);
    }
}
