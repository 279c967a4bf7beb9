package org.sparkmoe.train;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;

/**
 * Parameter averaging of float32 {@link TrainState}s in pieces: one chunk of a state's tensors (parameters and both
 * moments, in float32) and the weight (examples) behind it. {@link #split} cuts a partition's state into chunks of
 * at most a given size, {@link #mean} averages two chunks, {@link #join} puts the chunks of the final mean back
 * together. The mean of a left and a right chunk is {@code (wₗ·l + wᵣ·r) / (wₗ + wᵣ)} in float64, rounded once to
 * float32: the same operands give the same bits, so a fixed tree of means over partition indices gives the same
 * state however tasks are scheduled; a single partition's chunks come back unchanged. A gradient chunk ({@link
 * #splitGradients}: gradient averaging) holds a partition's gradients in place of the parameters and no moments; the
 * mean of the partitions' gradients then takes the optimiser step on the state's chunk ({@link #stepped}). Plain
 * fields (Kryo-friendly).
 */
public final class StateMean {
    /** The largest chunk of parameters and moments a train round averages and fetches as one piece. */
    public static final long CHUNK_BYTES = 64L << 20;

    private int chunk;
    private String[] keys;
    private long[][] shapes;
    private float[][] params;
    private float[][] m;
    private float[][] v;
    private long step;
    private long weight;

    /** For serializers only. */
    public StateMean() {
    }

    /** The optimiser steps the state (or the state the gradients were taken at) has taken. */
    public long step() {
        return step;
    }

    /** @return this chunk's index among the state's chunks */
    public int chunk() {
        return chunk;
    }

    /** @return the examples behind this mean */
    public long weight() {
        return weight;
    }

    /** @return bytes of the values this chunk holds */
    public long bytes() {
        long total = 0;
        for (float[] p : params) {
            total += (isGradient() ? 1L : 3L) * p.length * Float.BYTES;
        }
        return total;
    }

    /** Whether this chunk holds gradients ({@link #splitGradients}), not parameters and moments. */
    public boolean isGradient() {
        return m == null;
    }

    /**
     * A partition's state, weighted by its examples (&gt; 0), as chunks of whole tensors in key order, each at most
     * {@code maxChunkBytes} of parameters and moments unless a single tensor is larger; at least one chunk.
     */
    public static List<StateMean> split(TrainState state, long weight, long maxChunkBytes) {
        if (weight <= 0) {
            throw new IllegalArgumentException("a partition's weight (examples) must be positive, got " + weight);
        }
        List<List<String>> groups = chunkKeys(state, maxChunkBytes);
        List<StateMean> chunks = new ArrayList<>(groups.size());
        for (List<String> keys : groups) {
            chunks.add(of(chunks.size(), keys, state, weight));
        }
        return chunks;
    }

    /**
     * A partition's gradients at {@code state} (keys and order of its parameters), weighted by its examples (&gt; 0),
     * as the chunks {@link #split} cuts the state into with the same {@code maxChunkBytes}: chunk c of the gradients
     * pairs with chunk c of the state.
     */
    public static List<StateMean> splitGradients(TrainState state, Map<String, INDArray> grads, long weight,
                                                 long maxChunkBytes) {
        if (weight <= 0) {
            throw new IllegalArgumentException("a partition's weight (examples) must be positive, got " + weight);
        }
        TrainState.checkLike("gradients", state.params(), grads);
        List<StateMean> chunks = new ArrayList<>();
        for (List<String> keys : chunkKeys(state, maxChunkBytes)) {
            StateMean s = new StateMean();
            s.chunk = chunks.size();
            s.keys = keys.toArray(new String[0]);
            s.shapes = new long[keys.size()][];
            s.params = new float[keys.size()][];
            for (int i = 0; i < keys.size(); i++) {
                s.shapes[i] = state.params().get(keys.get(i)).shape();
                s.params[i] = Flat.floats(grads.get(keys.get(i)));
            }
            s.step = state.step();
            s.weight = weight;
            chunks.add(s);
        }
        return chunks;
    }

    /** The keys of each chunk {@link #split} makes. */
    public static List<List<String>> chunkKeys(TrainState state, long maxChunkBytes) {
        List<List<String>> groups = new ArrayList<>();
        List<String> keys = new ArrayList<>();
        long bytes = 0;
        for (Map.Entry<String, INDArray> e : state.params().entrySet()) {
            if (e.getValue().dataType() != DataType.FLOAT) {
                throw new IllegalArgumentException("parameter averaging takes float32 states, got "
                        + e.getValue().dataType() + " for " + e.getKey());
            }
            long tensorBytes = 3 * e.getValue().length() * Float.BYTES;
            if (!keys.isEmpty() && bytes + tensorBytes > maxChunkBytes) {
                groups.add(keys);
                keys = new ArrayList<>();
                bytes = 0;
            }
            keys.add(e.getKey());
            bytes += tensorBytes;
        }
        groups.add(keys);
        return groups;
    }

    private static StateMean of(int chunk, List<String> keys, TrainState state, long weight) {
        StateMean s = new StateMean();
        s.chunk = chunk;
        s.keys = keys.toArray(new String[0]);
        s.shapes = new long[keys.size()][];
        s.params = new float[keys.size()][];
        s.m = new float[keys.size()][];
        s.v = new float[keys.size()][];
        for (int i = 0; i < keys.size(); i++) {
            String key = keys.get(i);
            s.shapes[i] = state.params().get(key).shape();
            s.params[i] = Flat.floats(state.params().get(key));
            s.m[i] = Flat.floats(state.m().get(key));
            s.v[i] = Flat.floats(state.v().get(key));
        }
        s.step = state.step();
        s.weight = weight;
        return s;
    }

    /** The mean of this chunk (the left one: lower partitions) and {@code right}, the same chunk of others. */
    public StateMean mean(StateMean right) {
        if (chunk != right.chunk || step != right.step || isGradient() != right.isGradient()
                || !java.util.Arrays.equals(keys, right.keys)) {
            throw new IllegalArgumentException("cannot average chunk " + chunk + " at step " + step + " with chunk "
                    + right.chunk + " at step " + right.step + " (different keys or steps)");
        }
        StateMean out = new StateMean();
        out.chunk = chunk;
        out.keys = keys;
        out.shapes = shapes;
        out.step = step;
        out.weight = weight + right.weight;
        out.params = mean(params, weight, right.params, right.weight);
        if (!isGradient()) {
            out.m = mean(m, weight, right.m, right.weight);
            out.v = mean(v, weight, right.v, right.weight);
        }
        return out;
    }

    /** Σ x² of each gradient tensor of this chunk, in key order, in float64 (as {@link GradClip#clip} sums them). */
    public double[] squares() {
        requireGradient(this);
        double[] out = new double[params.length];
        for (int t = 0; t < params.length; t++) {
            double sq = 0;
            for (float x : params[t]) {
                sq += (double) x * x;
            }
            out[t] = sq;
        }
        return out;
    }

    /**
     * This chunk of a state after one optimiser step with {@code gradient}, the same chunk of the (mean) gradients at
     * this state: each gradient element multiplied by {@code coef} when it is below 1 (rounded to float32, as {@link
     * GradClip#clip} does), then {@link AdamW#update} at learning rate {@code lr}. The same bits as {@link
     * TrainStep#run} on one process whose gradients these are.
     */
    public StateMean stepped(StateMean gradient, double coef, double lr, AdamW adamW) {
        requireGradient(gradient);
        if (isGradient() || chunk != gradient.chunk || step != gradient.step
                || !java.util.Arrays.equals(keys, gradient.keys)) {
            throw new IllegalArgumentException("cannot step chunk " + chunk + " at step " + step + " with gradient "
                    + "chunk " + gradient.chunk + " at step " + gradient.step + " (different keys or steps)");
        }
        StateMean out = new StateMean();
        out.chunk = chunk;
        out.keys = keys;
        out.shapes = shapes;
        out.step = step + 1;
        out.weight = weight;
        out.params = new float[keys.length][];
        out.m = new float[keys.length][];
        out.v = new float[keys.length][];
        for (int t = 0; t < keys.length; t++) {
            float[] grad = gradient.params[t];
            double[] g = new double[grad.length];
            for (int i = 0; i < g.length; i++) {
                g[i] = coef < 1.0 ? (float) (grad[i] * coef) : grad[i];
            }
            double[] theta = widened(params[t]);
            double[] mt = widened(m[t]);
            double[] vt = widened(v[t]);
            adamW.update(theta, g, mt, vt, out.step, lr);
            out.params[t] = narrowed(theta);
            out.m[t] = narrowed(mt);
            out.v[t] = narrowed(vt);
        }
        return out;
    }

    private static void requireGradient(StateMean s) {
        if (!s.isGradient()) {
            throw new IllegalArgumentException("chunk " + s.chunk + " holds a state, not gradients");
        }
    }

    private static double[] widened(float[] x) {
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) {
            out[i] = x[i];
        }
        return out;
    }

    private static float[] narrowed(double[] x) {
        float[] out = new float[x.length];
        for (int i = 0; i < x.length; i++) {
            out[i] = (float) x[i];
        }
        return out;
    }

    private static float[][] mean(float[][] left, long wl, float[][] right, long wr) {
        double total = (double) wl + wr;
        float[][] out = new float[left.length][];
        for (int t = 0; t < left.length; t++) {
            float[] a = left[t];
            float[] b = right[t];
            float[] o = new float[a.length];
            for (int i = 0; i < a.length; i++) {
                o[i] = (float) ((wl * (double) a[i] + wr * (double) b[i]) / total);
            }
            out[t] = o;
        }
        return out;
    }

    /**
     * The first key of this chunk, in key order, whose parameters, first moments and second moments (in that order
     * of the result) hold a NaN or an infinity; null where all are finite.
     */
    public String[] firstNonFinite() {
        return new String[] {firstNonFinite(params), firstNonFinite(m), firstNonFinite(v)};
    }

    private String firstNonFinite(float[][] tensors) {
        if (tensors == null) {
            return null;
        }
        for (int t = 0; t < tensors.length; t++) {
            for (float x : tensors[t]) {
                if (!Float.isFinite(x)) {
                    return keys[t];
                }
            }
        }
        return null;
    }

    /** The state the chunks 0 .. C−1 (in order, each the mean over all partitions) make up. */
    public static TrainState join(List<StateMean> chunks) {
        LinkedHashMap<String, INDArray> params = new LinkedHashMap<>();
        LinkedHashMap<String, INDArray> m = new LinkedHashMap<>();
        LinkedHashMap<String, INDArray> v = new LinkedHashMap<>();
        long step = chunks.get(0).step;
        for (int c = 0; c < chunks.size(); c++) {
            StateMean s = chunks.get(c);
            if (s.chunk != c || s.step != step || s.isGradient()) {
                throw new IllegalArgumentException("chunk " + c + " of a state is " + (s.isGradient() ? "gradient "
                        : "") + "chunk " + s.chunk + " at step " + s.step + " (expected step " + step + ")");
            }
            for (int i = 0; i < s.keys.length; i++) {
                params.put(s.keys[i], Flat.array(s.params[i], s.shapes[i]));
                m.put(s.keys[i], Flat.array(s.m[i], s.shapes[i]));
                v.put(s.keys[i], Flat.array(s.v[i], s.shapes[i]));
            }
        }
        return new TrainState(params, m, v, step);
    }
}
