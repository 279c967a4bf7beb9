package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** {@link StateMean}: example-weighted means of parameters and both moments, by hand; chunking; errors. */
class StateMeanTest {

    /** Partitions with 1 and 3 examples: (1·a + 3·b) / 4 for θ, m and v, rounded once; the step is kept. */
    @Test
    void meansAreWeightedByExamples() {
        TrainState a = state(new float[] {1, 2}, new float[] {0.5f, 0}, new float[] {4, 8}, 7);
        TrainState b = state(new float[] {5, -2}, new float[] {0.1f, 1}, new float[] {0, 8}, 7);
        TrainState avg = StateMean.join(List.of(only(a, 1).mean(only(b, 3))));
        assertArrayEquals(new float[] {4, -1}, avg.params().get("k").data().asFloat());
        assertArrayEquals(new float[] {(float) ((0.5 + 3 * (double) 0.1f) / 4), 0.75f}, avg.m().get("k").data().asFloat());
        assertArrayEquals(new float[] {1, 8}, avg.v().get("k").data().asFloat());
        assertEquals(7, avg.step());
        assertEquals(4, only(a, 1).mean(only(b, 3)).weight());
    }

    @Test
    void oneChunkComesBackUnchanged() {
        TrainState a = state(new float[] {0.1f, 3e-3f}, new float[] {1, 2}, new float[] {1e-8f, 2}, 2);
        TrainState back = StateMean.join(StateMean.split(a, 5, 1 << 20));
        assertArrayEquals(a.params().get("k").data().asFloat(), back.params().get("k").data().asFloat());
        assertArrayEquals(a.v().get("k").data().asFloat(), back.v().get("k").data().asFloat());
    }

    /** Chunks of whole tensors in key order, no larger than asked unless one tensor is; the mean is per element. */
    @Test
    void chunkingDoesNotChangeTheMean() {
        TrainState a = manyKeys(1f);
        TrainState b = manyKeys(-0.3f);
        // 5 tensors of 3·4 floats = 48 bytes each: chunks of at most 100 bytes hold 2, 2 and 1
        assertEquals(List.of(List.of("t0", "t1"), List.of("t2", "t3"), List.of("t4")), StateMean.chunkKeys(a, 100));
        List<StateMean> left = StateMean.split(a, 3, 100);
        List<StateMean> right = StateMean.split(b, 5, 100);
        List<StateMean> chunked = new ArrayList<>();
        for (int c = 0; c < left.size(); c++) {
            chunked.add(left.get(c).mean(right.get(c)));
        }
        TrainState whole = StateMean.join(List.of(StateMean.split(a, 3, 1 << 20).get(0)
                .mean(StateMean.split(b, 5, 1 << 20).get(0))));
        TrainState joined = StateMean.join(chunked);
        assertEquals(whole.params().keySet(), joined.params().keySet());
        for (String k : whole.params().keySet()) {
            assertArrayEquals(whole.params().get(k).data().asFloat(), joined.params().get(k).data().asFloat(), k);
            assertArrayEquals(whole.m().get(k).data().asFloat(), joined.m().get(k).data().asFloat(), k);
        }
    }

    @Test
    void mismatchedChunksStepsAndWeightsAreRejected() {
        TrainState a = state(new float[] {1}, new float[] {1}, new float[] {1}, 3);
        TrainState b = state(new float[] {1}, new float[] {1}, new float[] {1}, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> only(a, 1).mean(only(b, 1)));
        assertTrue(e.getMessage().contains("chunk 0 at step 3 with chunk 0 at step 4"), e.getMessage());
        IllegalArgumentException w = assertThrows(IllegalArgumentException.class, () -> StateMean.split(a, 0, 1));
        assertTrue(w.getMessage().contains("must be positive, got 0"), w.getMessage());
        TrainState d = new TrainState(map(new float[] {1}, DataType.DOUBLE), map(new float[] {1}, DataType.DOUBLE),
                map(new float[] {1}, DataType.DOUBLE), 1);
        IllegalArgumentException f = assertThrows(IllegalArgumentException.class, () -> StateMean.split(d, 1, 1));
        assertTrue(f.getMessage().contains("float32 states, got DOUBLE for k"), f.getMessage());
    }

    /** A chunk names its first non-finite key per kind (parameters, m, v), in key order; null where all finite. */
    @Test
    void firstNonFiniteNamesTheKeyPerKind() {
        TrainState s = manyKeys(1f);
        s.params().get("t3").putScalar(1, Float.NaN);
        s.v().get("t1").putScalar(0, Float.POSITIVE_INFINITY);
        s.v().get("t4").putScalar(3, Float.NEGATIVE_INFINITY);
        List<StateMean> chunks = StateMean.split(s, 1, 100);   // t0 t1 | t2 t3 | t4
        assertArrayEquals(new String[] {null, null, "t1"}, chunks.get(0).firstNonFinite());
        assertArrayEquals(new String[] {"t3", null, null}, chunks.get(1).firstNonFinite());
        assertArrayEquals(new String[] {null, null, "t4"}, chunks.get(2).firstNonFinite());
        assertArrayEquals(new String[] {null, null, null}, StateMean.split(manyKeys(2f), 1, 100).get(0)
                .firstNonFinite());
    }

    /**
     * Gradient averaging: two partitions' gradient chunks (weights 3 and 5) averaged, then each chunk of the state
     * {@link StateMean#stepped} with the clip factor of the global norm from the chunks' squares, equal {@link
     * GradClip#clip} and {@link AdamW#update} on one process holding the same mean gradients, bit for bit, clipped
     * or not. A gradient chunk is a third of a state chunk's bytes and does not mix with one.
     */
    @Test
    void aSteppedChunkEqualsClipAndAdamWOnTheWholeState() {
        AdamW adamW = new AdamW(0.9, 0.999, 1e-8, 0.01);
        for (double maxNorm : new double[] {0.05, Double.POSITIVE_INFINITY}) {
            TrainState start = nonNegativeMoments();
            LinkedHashMap<String, INDArray> ga = gradients(0.7f);
            LinkedHashMap<String, INDArray> gb = gradients(-0.2f);
            List<StateMean> a = StateMean.splitGradients(start, ga, 3, 100);    // t0 t1 | t2 t3 | t4, as the state
            List<StateMean> b = StateMean.splitGradients(start, gb, 5, 100);
            List<StateMean> states = StateMean.split(start, 1, 100);
            assertEquals(3, a.size());
            assertEquals(2 * 4 * Float.BYTES, a.get(0).bytes());
            assertEquals(3 * a.get(0).bytes(), states.get(0).bytes());
            assertThrows(IllegalArgumentException.class, () -> a.get(0).mean(states.get(0)));
            List<StateMean> means = new ArrayList<>();
            List<Double> squares = new ArrayList<>();
            for (int c = 0; c < a.size(); c++) {
                means.add(a.get(c).mean(b.get(c)));
                for (double sq : means.get(c).squares()) {
                    squares.add(sq);
                }
            }
            double coef = GradClip.coefficient(GradClip.total(squares.stream().mapToDouble(x -> x).toArray()),
                    maxNorm);
            assertEquals(maxNorm < 1, coef < 1, "clipped at 0.05 only");
            List<StateMean> stepped = new ArrayList<>();
            for (int c = 0; c < states.size(); c++) {
                stepped.add(states.get(c).stepped(means.get(c), coef, 2e-3, adamW));
            }
            TrainState chunked = StateMean.join(stepped);

            LinkedHashMap<String, INDArray> mean = new LinkedHashMap<>();   // (3·a + 5·b) / 8, rounded once
            for (String k : ga.keySet()) {
                float[] x = ga.get(k).data().asFloat();
                float[] y = gb.get(k).data().asFloat();
                float[] out = new float[x.length];
                for (int i = 0; i < x.length; i++) {
                    out[i] = (float) ((3 * (double) x[i] + 5 * (double) y[i]) / 8);
                }
                mean.put(k, Nd4j.create(out, new long[] {2, 2}, 'c'));
            }
            TrainState whole = nonNegativeMoments();
            GradClip.clip(mean, maxNorm);
            adamW.update(whole, mean, 2e-3);
            assertEquals(whole.step(), chunked.step());
            for (String k : whole.params().keySet()) {
                assertArrayEquals(whole.params().get(k).data().asFloat(), chunked.params().get(k).data().asFloat(), k);
                assertArrayEquals(whole.m().get(k).data().asFloat(), chunked.m().get(k).data().asFloat(), k);
                assertArrayEquals(whole.v().get(k).data().asFloat(), chunked.v().get(k).data().asFloat(), k);
            }
        }
    }

    private static TrainState nonNegativeMoments() {
        TrainState s = manyKeys(1f);
        s.v().replaceAll((k, v) -> Nd4j.math().abs(v));
        return s;
    }

    private static LinkedHashMap<String, INDArray> gradients(float scale) {
        LinkedHashMap<String, INDArray> g = new LinkedHashMap<>();
        for (int t = 0; t < 5; t++) {
            g.put("t" + t, Nd4j.create(new float[] {scale * (t - 2.3f), scale / 7, -scale * 1e-3f, scale * t * t},
                    new long[] {2, 2}, 'c'));
        }
        return g;
    }

    private static StateMean only(TrainState s, long weight) {
        List<StateMean> chunks = StateMean.split(s, weight, Long.MAX_VALUE);
        assertEquals(1, chunks.size());
        return chunks.get(0);
    }

    private static TrainState manyKeys(float scale) {
        LinkedHashMap<String, INDArray> p = new LinkedHashMap<>();
        LinkedHashMap<String, INDArray> m = new LinkedHashMap<>();
        LinkedHashMap<String, INDArray> v = new LinkedHashMap<>();
        for (int t = 0; t < 5; t++) {
            float[] values = {scale * (t + 0.1f), scale * 1e-3f, -scale * t, scale / 3};
            p.put("t" + t, Nd4j.create(values, new long[] {2, 2}, 'c').castTo(DataType.FLOAT));
            m.put("t" + t, Nd4j.create(values, new long[] {2, 2}, 'c').castTo(DataType.FLOAT).mul(0.5));
            v.put("t" + t, Nd4j.create(values, new long[] {2, 2}, 'c').castTo(DataType.FLOAT).mul(2));
        }
        return new TrainState(p, m, v, 9);
    }

    private static TrainState state(float[] p, float[] m, float[] v, long step) {
        return new TrainState(map(p, DataType.FLOAT), map(m, DataType.FLOAT), map(v, DataType.FLOAT), step);
    }

    private static LinkedHashMap<String, INDArray> map(float[] values, DataType type) {
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        out.put("k", Nd4j.create(values, new long[] {values.length}, 'c').castTo(type));
        return out;
    }
}
