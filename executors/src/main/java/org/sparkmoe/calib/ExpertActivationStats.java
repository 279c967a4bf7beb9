package org.sparkmoe.calib;

import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.kernels.NativeBuffers;
import org.sparkmoe.kernels.NativeElements;
import org.sparkmoe.kernels.StepWorkspace;

import java.util.Arrays;

/**
 * Per-expert, per-channel activation magnitudes of one MoE layer, as quantisers' calibration needs them, as an
 * exact mergeable accumulator. For each expert e and the tokens it sees:
 * <ul>
 * <li>input channels (what w1/w3 read, D): Σ|x_d| (exact) and max |x_d|;</li>
 * <li>intermediate channels (what w2 reads, I: silu(x·w1ᵀ) ⊙ (x·w3ᵀ), gpt-oss: its clamped gate of the biased
 * projections): Σ|h_i| (exact) and max |h_i|;</li>
 * <li>tokens[e]: how many tokens that is.</li>
 * </ul>
 * The tokens an expert sees are those routed to it, with the activations the block's forward computed (an adapter's
 * LoRA on w1/w3 included), or every token through every expert, computed the same way ({@link #addEveryToken}: then
 * no expert is left without data, whatever the router does).
 */
public final class ExpertActivationStats implements java.io.Serializable {
    /** At most this many floats of an expert's inputs, and as many of its activations, on the heap at a time. */
    public static final int BLOCK_FLOATS = 1 << 16;
    private final int experts;
    private final int hidden;
    private final int intermediate;
    private final long[] tokens;         // [E]
    private final ExactSums inputAbsSum; // [E, D]
    private final float[] inputAbsMax;   // [E, D]
    private final ExactSums interAbsSum; // [E, I]
    private final float[] interAbsMax;   // [E, I]

    public ExpertActivationStats(int experts, int hidden, int intermediate) {
        this.experts = experts;
        this.hidden = hidden;
        this.intermediate = intermediate;
        this.tokens = new long[experts];
        this.inputAbsSum = new ExactSums(experts * hidden);
        this.inputAbsMax = new float[experts * hidden];
        this.interAbsSum = new ExactSums(experts * intermediate);
        this.interAbsMax = new float[experts * intermediate];
    }

    /** A block of an expert's rows: their inputs x [n, D] and intermediate activations h [n, I], row-major. */
    @FunctionalInterface
    public interface Seen {
        void add(int expert, float[] x, float[] h);
    }

    /**
     * Adds the routed rows of one forward of the layer's block: each expert's inputs and the gated activations its w2
     * read, as the forward computed them (with an adapter's LoRA on w1/w3), showing each expert's rows to
     * {@code seen} (null: to nobody).
     */
    public void add(FullExperts.RoutedRows rows, Seen seen) {
        int[] offsets = rows.routes().plan.offsets;                                   // [E+1]
        if (offsets.length != experts + 1 || rows.xs().size(1) != hidden || rows.act().size(1) != intermediate) {
            throw new IllegalArgumentException("expected the routed rows of " + experts + " experts, x [N, " + hidden
                    + "] and h [N, " + intermediate + "], got " + (offsets.length - 1) + " experts, x "
                    + Arrays.toString(rows.xs().shape()) + " and h " + Arrays.toString(rows.act().shape()));
        }
        if (offsets[experts] == 0) {
            return;                                                                   // no routed row
        }
        NativeElements xs = NativeElements.of(rows.xs());                             // [N, D]
        NativeElements act = NativeElements.of(rows.act());                           // [N, I]
        for (int e = 0; e < experts; e++) {
            addRows(e, xs, act, offsets[e], offsets[e + 1] - offsets[e], seen);
        }
    }

    /**
     * Adds every token of x [T, D] as seen by every expert (whatever the router chose, so no expert is left without
     * data): each expert's w1/w3 run here as the forward runs them (with an adapter's LoRA), one expert at a time,
     * showing its rows to {@code seen} (null: to nobody).
     */
    public void addEveryToken(INDArray x, FullExperts layerExperts, Seen seen) {
        ExpertWeights weights = layerExperts.weights();
        if (x.size(1) != hidden || weights.experts() != experts || weights.intermediate() != intermediate) {
            throw new IllegalArgumentException("expected x [T, " + hidden + "] and " + experts + " experts of "
                    + intermediate + ", got x " + Arrays.toString(x.shape()) + ", w1 " + weights.w1());
        }
        int t = (int) x.size(0);
        if (t == 0) {
            return;
        }
        NativeElements xs = NativeElements.of(x);                                                     // [T, D]
        for (int e = 0; e < experts; e++) {
            // one expert's arrays at a time: made outside a caller's step workspace (which would keep every expert's
            // until the step ends, E × T rows) and freed here
            try (MemoryWorkspace outside = StepWorkspace.outside()) {
                INDArray h = layerExperts.everyTokenActivation(x, e);                                // [T, I]
                addRows(e, xs, NativeElements.of(h), 0, t, seen);
                NativeBuffers.free(h);
            }
        }
    }

    /**
     * Expert e's n rows from row {@code first} on: inputs of {@code xs} [., D] and activations of {@code hs} [., I],
     * read onto the heap {@link #BLOCK_FLOATS} floats at a time (no array grows with the tokens).
     */
    private void addRows(int e, NativeElements xs, NativeElements hs, int first, int n, Seen seen) {
        int block = Math.max(1, BLOCK_FLOATS / Math.max(hidden, intermediate));        // rows per read
        for (int r = 0; r < n; r += block) {
            int rows = Math.min(block, n - r);
            float[] x = new float[rows * hidden];                                     // [rows, D]
            float[] h = new float[rows * intermediate];                               // [rows, I]
            xs.readFloats((long) (first + r) * hidden, x, x.length);
            hs.readFloats((long) (first + r) * intermediate, h, h.length);
            accumulate(x, hidden, e, inputAbsSum, inputAbsMax);
            accumulate(h, intermediate, e, interAbsSum, interAbsMax);
            if (seen != null) {
                seen.add(e, x, h);
            }
        }
        tokens[e] += n;
    }

    /** values [n, C] of expert e into sums/maxima [E, C]. */
    private static void accumulate(float[] values, int channels, int e, ExactSums sums, float[] max) {
        int base = e * channels;
        for (int at = 0; at < values.length; at += channels) {
            for (int c = 0; c < channels; c++) {
                float a = Math.abs(values[at + c]);
                sums.add(base + c, a);
                if (a > max[base + c]) {
                    max[base + c] = a;
                }
            }
        }
    }

    /** this += other (exact). */
    public ExpertActivationStats merge(ExpertActivationStats other) {
        if (other.experts != experts || other.hidden != hidden || other.intermediate != intermediate) {
            throw new IllegalArgumentException("merging activation statistics of a different layer shape");
        }
        for (int e = 0; e < experts; e++) {
            tokens[e] += other.tokens[e];
        }
        inputAbsSum.merge(other.inputAbsSum);
        interAbsSum.merge(other.interAbsSum);
        for (int i = 0; i < inputAbsMax.length; i++) {
            inputAbsMax[i] = Math.max(inputAbsMax[i], other.inputAbsMax[i]);
        }
        for (int i = 0; i < interAbsMax.length; i++) {
            interAbsMax[i] = Math.max(interAbsMax[i], other.interAbsMax[i]);
        }
        return this;
    }

    public long[] tokens() {
        return tokens.clone();
    }

    /** Mean |x| per input channel, [E, D] (zero rows for experts that saw no token). */
    public INDArray inputAbsMean() {
        return mean(inputAbsSum, hidden);
    }

    /** Max |x| per input channel, [E, D]. */
    public INDArray inputAbsMax() {
        return Nd4j.create(inputAbsMax.clone(), new long[] {experts, hidden}, 'c');
    }

    /** Mean |h| per intermediate channel, [E, I]. */
    public INDArray intermediateAbsMean() {
        return mean(interAbsSum, intermediate);
    }

    /** Max |h| per intermediate channel, [E, I]. */
    public INDArray intermediateAbsMax() {
        return Nd4j.create(interAbsMax.clone(), new long[] {experts, intermediate}, 'c');
    }

    private INDArray mean(ExactSums sums, int channels) {
        float[] out = new float[experts * channels];
        for (int e = 0; e < experts; e++) {
            for (int c = 0; c < channels; c++) {
                out[e * channels + c] = tokens[e] == 0 ? 0f : (float) (sums.get(e * channels + c) / tokens[e]);
            }
        }
        return Nd4j.create(out, new long[] {experts, channels}, 'c');
    }

    public boolean sameAs(ExpertActivationStats other) {
        return Arrays.equals(tokens, other.tokens) && inputAbsSum.sameAs(other.inputAbsSum)
                && interAbsSum.sameAs(other.interAbsSum) && Arrays.equals(inputAbsMax, other.inputAbsMax)
                && Arrays.equals(interAbsMax, other.interAbsMax);
    }
}
