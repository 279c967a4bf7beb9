package org.sparkmoe.lora;

import java.util.Arrays;
import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Everything a shared-base MoLoRA FFN reads: the frozen base SwiGLU weights every token uses, the router gate
 * (trainable) that picks K of the E LoRA experts per token, and the adapters. One data type for all arrays
 * (float32 for speed, float64 for gradient checks).
 *
 * @param w1            [I, D] frozen gate_proj
 * @param w3            [I, D] frozen up_proj
 * @param w2            [D, I] frozen down_proj
 * @param gate          [E, D] router weights: logits [T, E] = x · gateᵀ
 * @param adapters      the LoRA experts of the three projections
 * @param topK          K experts per token, 1 ≤ K ≤ E
 * @param normalizeTopK Mixtral semantics (true): the K softmax weights renormalised to sum 1; false keeps the
 *                      softmax-over-E weights of the selected experts
 */
public record SharedBaseLoraWeights(INDArray w1, INDArray w3, INDArray w2, INDArray gate,
        SharedBaseAdapters adapters, int topK, boolean normalizeTopK) {

    public SharedBaseLoraWeights {
        int d = (int) w1.size(1);
        int i = (int) w1.size(0);
        int e = adapters.experts();
        expect("w1", w1, i, d);
        expect("w3", w3, i, d);
        expect("w2", w2, d, i);
        expect("gate", gate, e, d);
        if (adapters.a1.size(2) != d || adapters.b1.size(1) != i) {
            throw new IllegalArgumentException("shared-base adapters are for D=" + adapters.a1.size(2) + ", I="
                    + adapters.b1.size(1) + " but the base FFN has D=" + d + ", I=" + i);
        }
        for (INDArray t : new INDArray[] {w3, w2, gate}) {
            if (t.dataType() != w1.dataType()) {
                throw new IllegalArgumentException("shared-base weights mix data types: w1 is " + w1.dataType()
                        + ", found " + t.dataType());
            }
        }
        if (adapters.dataType() != w1.dataType()) {
            throw new IllegalArgumentException("shared-base adapters are " + adapters.dataType()
                    + " but the base weights are " + w1.dataType());
        }
        if (topK < 1 || topK > e) {
            throw new IllegalArgumentException("top-k must be in [1, " + e + "], got " + topK);
        }
    }

    private static void expect(String name, INDArray t, long... shape) {
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("shared-base " + name + " must be " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()));
        }
    }

    /** Random weights from one seed: base and gate U(−1/√in, 1/√in), A and B U(−loraBound, loraBound). */
    public static SharedBaseLoraWeights random(int d, int i, int e, int k, int r, double scale, double loraBound,
            boolean normalizeTopK, DataType dt, long seed) {
        Random rnd = new Random(seed);
        INDArray w1 = SharedBaseAdapters.uniform(rnd, dt, 1 / Math.sqrt(d), i, d);
        INDArray w3 = SharedBaseAdapters.uniform(rnd, dt, 1 / Math.sqrt(d), i, d);
        INDArray w2 = SharedBaseAdapters.uniform(rnd, dt, 1 / Math.sqrt(i), d, i);
        INDArray gate = SharedBaseAdapters.uniform(rnd, dt, 1 / Math.sqrt(d), e, d);
        SharedBaseAdapters adapters = SharedBaseAdapters.random(d, i, e, r, scale, loraBound, dt, rnd.nextLong());
        return new SharedBaseLoraWeights(w1, w3, w2, gate, adapters, k, normalizeTopK);
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
     * shared-base form replaces ("100× more experts in the same memory").
     */
    public static long denseMoeParameters(long d, long i, long e) {
        return 3 * e * i * d + e * d;
    }
}
