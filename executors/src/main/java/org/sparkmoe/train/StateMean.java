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
 * state however tasks are scheduled; a single partition's chunks come back unchanged. Plain fields (Kryo-friendly).
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
            total += 3L * p.length * Float.BYTES;
        }
        return total;
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
        if (chunk != right.chunk || step != right.step || !java.util.Arrays.equals(keys, right.keys)) {
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
        out.m = mean(m, weight, right.m, right.weight);
        out.v = mean(v, weight, right.v, right.weight);
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
            if (s.chunk != c || s.step != step) {
                throw new IllegalArgumentException("chunk " + c + " of a state is chunk " + s.chunk + " at step "
                        + s.step + " (expected step " + step + ")");
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
