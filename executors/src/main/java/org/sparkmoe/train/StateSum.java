package org.sparkmoe.train;

import java.util.LinkedHashMap;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;

/**
 * Parameter averaging of {@link TrainState}s, as a mergeable aggregator (of / add / merge, then average): the sum
 * over partitions of every tensor and both moments times the examples the partition saw, divided by the total
 * examples. Sums are kept in float64 and the division rounds once to the state's type. Merging the same partitions
 * in the same order gives the same bits; a float32 value times a count is exact in float64, so a few partitions'
 * sums are usually exact and the order rarely matters, but a job that must be bit-reproducible merges in partition
 * index order. All states must share keys, shapes and the step count. Plain fields (Kryo-friendly).
 */
public final class StateSum {
    private LinkedHashMap<String, double[]> params;
    private LinkedHashMap<String, double[]> m;
    private LinkedHashMap<String, double[]> v;
    private LinkedHashMap<String, long[]> shapes;
    private DataType dataType;
    private long step;
    private long examples;

    /** For serializers only. */
    public StateSum() {
    }

    /** One partition's state weighted by its examples (&gt; 0). */
    public static StateSum of(TrainState state, long examples) {
        if (examples <= 0) {
            throw new IllegalArgumentException("a partition's weight (examples) must be positive, got " + examples);
        }
        StateSum s = new StateSum();
        s.params = weighted(state.params(), examples);
        s.m = weighted(state.m(), examples);
        s.v = weighted(state.v(), examples);
        s.shapes = new LinkedHashMap<>();
        state.params().forEach((k, a) -> s.shapes.put(k, a.shape()));
        s.dataType = state.params().isEmpty() ? DataType.FLOAT : state.params().values().iterator().next().dataType();
        s.step = state.step();
        s.examples = examples;
        return s;
    }

    /** this += other (in place); returns this. */
    public StateSum merge(StateSum other) {
        if (!shapes.keySet().equals(other.shapes.keySet()) || step != other.step) {
            throw new IllegalArgumentException("cannot average states with different keys or steps: step " + step
                    + " " + shapes.keySet() + " vs step " + other.step + " " + other.shapes.keySet());
        }
        addInto(params, other.params);
        addInto(m, other.m);
        addInto(v, other.v);
        examples += other.examples;
        return this;
    }

    /** this += state × examples; returns this. */
    public StateSum add(TrainState state, long examples) {
        return merge(of(state, examples));
    }

    /** @return the total weight */
    public long examples() {
        return examples;
    }

    /** The weighted average as a new state (same step count). */
    public TrainState average() {
        return new TrainState(divided(params), divided(m), divided(v), step);
    }

    private LinkedHashMap<String, INDArray> divided(Map<String, double[]> sums) {
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        for (Map.Entry<String, double[]> e : sums.entrySet()) {
            double[] s = e.getValue();
            double[] avg = new double[s.length];
            for (int i = 0; i < s.length; i++) {
                avg[i] = s[i] / examples;
            }
            out.put(e.getKey(), Flat.array(avg, shapes.get(e.getKey()), dataType));
        }
        return out;
    }

    private static LinkedHashMap<String, double[]> weighted(Map<String, INDArray> tensors, long w) {
        LinkedHashMap<String, double[]> out = new LinkedHashMap<>();
        for (Map.Entry<String, INDArray> e : tensors.entrySet()) {
            double[] v = Flat.values(e.getValue());
            for (int i = 0; i < v.length; i++) {
                v[i] *= w;
            }
            out.put(e.getKey(), v);
        }
        return out;
    }

    private static void addInto(Map<String, double[]> into, Map<String, double[]> from) {
        for (Map.Entry<String, double[]> e : into.entrySet()) {
            double[] a = e.getValue();
            double[] b = from.get(e.getKey());
            for (int i = 0; i < a.length; i++) {
                a[i] += b[i];
            }
        }
    }
}
