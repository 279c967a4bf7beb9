package org.sparkmoe.experts;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The LoRA adapters of one projection for E experts: expert e adds {@code (α/R)·(x·A_eᵀ)·B_eᵀ} to the frozen
 * {@code x·Wᵀ}. Stacked in Hugging Face's Linear layout so both factors go through the grouped GEMM.
 *
 * @param a     [E, R, in] (PEFT lora_A per expert)
 * @param b     [E, out, R] (PEFT lora_B per expert)
 * @param alpha lora_alpha; the scale is α/R
 */
public record LoraExperts(INDArray a, INDArray b, double alpha) {

    public LoraExperts {
        if (a == null || b == null) {
            throw new IllegalArgumentException("LoRA factors must not be null, got a=" + a + ", b=" + b);
        }
        if (a.rank() != 3 || b.rank() != 3 || a.size(0) != b.size(0) || a.size(1) != b.size(2)) {
            throw new IllegalArgumentException("LoRA factors disagree: expected a [E, R, in] and b [E, out, R], got a "
                    + Arrays.toString(a.shape()) + ", b " + Arrays.toString(b.shape()));
        }
        if (a.size(1) < 1) {
            throw new IllegalArgumentException("LoRA rank must be at least 1, got a " + Arrays.toString(a.shape()));
        }
        if (a.dataType() != b.dataType() || (a.dataType() != DataType.FLOAT && a.dataType() != DataType.DOUBLE)) {
            throw new IllegalArgumentException("LoRA factors must both be FLOAT or both DOUBLE, got a "
                    + a.dataType() + ", b " + b.dataType());
        }
        if (!(alpha > 0) || Double.isInfinite(alpha)) {
            throw new IllegalArgumentException("LoRA alpha must be positive and finite, got " + alpha);
        }
    }

    /**
     * PEFT's default initialisation for every expert: A Kaiming-uniform with a=√5, which for a [R, in] Linear
     * weight is U(−1/√in, 1/√in); B zero, so the adapted model starts as the frozen one. A is drawn in 'c' order
     * from one {@link SplittableRandom} seeded with {@code seed}: the same seed gives the same bits.
     */
    public static LoraExperts init(int experts, int in, int out, int rank, double alpha, long seed,
                                   DataType dataType) {
        if (experts < 1 || in < 1 || out < 1 || rank < 1) {
            throw new IllegalArgumentException("LoRA experts need experts, in, out and rank ≥ 1, got experts="
                    + experts + ", in=" + in + ", out=" + out + ", rank=" + rank);
        }
        if (dataType != DataType.FLOAT && dataType != DataType.DOUBLE) {
            throw new IllegalArgumentException("LoRA data type must be FLOAT or DOUBLE, got " + dataType);
        }
        double bound = 1.0 / Math.sqrt(in);
        SplittableRandom random = new SplittableRandom(seed);
        double[] values = new double[Math.multiplyExact(Math.multiplyExact(experts, rank), in)];
        for (int i = 0; i < values.length; i++) {
            values[i] = (2.0 * random.nextDouble() - 1.0) * bound;
        }
        INDArray a = Nd4j.create(values, new long[] {experts, rank, in}, 'c').castTo(dataType); // [E, R, in]
        INDArray b = Nd4j.zeros(dataType, experts, out, rank);                                 // [E, out, R]
        return new LoraExperts(a, b, alpha);
    }

    public int experts() {
        return (int) a.size(0);
    }

    public int rank() {
        return (int) a.size(1);
    }

    public int in() {
        return (int) a.size(2);
    }

    public int out() {
        return (int) b.size(1);
    }

    /** α/R. */
    public double scale() {
        return alpha / rank();
    }
}
