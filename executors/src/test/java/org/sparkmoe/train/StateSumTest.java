package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** {@link StateSum}: example-weighted averages of parameters and both moments, by hand; merge order; errors. */
class StateSumTest {

    /** Partitions with 1 and 3 examples: (1·a + 3·b) / 4 for θ, m and v; the step is kept. */
    @Test
    void averagesAreWeightedByExamples() {
        TrainState a = state(new float[] {1, 2}, new float[] {0.5f, 0}, new float[] {4, 8}, 7);
        TrainState b = state(new float[] {5, -2}, new float[] {0.1f, 1}, new float[] {0, 8}, 7);
        TrainState avg = StateSum.of(a, 1).add(b, 3).average();
        assertArrayEquals(new float[] {4, -1}, avg.params().get("k").data().asFloat());
        assertArrayEquals(new float[] {(float) ((0.5 + 3 * (double) 0.1f) / 4), 0.75f}, avg.m().get("k").data().asFloat());
        assertArrayEquals(new float[] {1, 8}, avg.v().get("k").data().asFloat());
        assertEquals(7, avg.step());
    }

    @Test
    void mergeOrderDoesNotChangeTheBitsOfFloat32Sums() {
        TrainState[] parts = {state(new float[] {0.1f, 3e-3f}, new float[] {1, 2}, new float[] {1e-8f, 2}, 2),
                state(new float[] {0.7f, -1e-3f}, new float[] {3, 4}, new float[] {3e-8f, 1}, 2),
                state(new float[] {-0.3f, 2e-3f}, new float[] {5, 6}, new float[] {2e-8f, 5}, 2)};
        TrainState forward = StateSum.of(parts[0], 3).merge(StateSum.of(parts[1], 5)).merge(StateSum.of(parts[2], 2))
                .average();
        TrainState backward = StateSum.of(parts[2], 2).merge(StateSum.of(parts[1], 5).merge(StateSum.of(parts[0], 3)))
                .average();
        assertArrayEquals(forward.params().get("k").data().asFloat(), backward.params().get("k").data().asFloat());
        assertArrayEquals(forward.v().get("k").data().asFloat(), backward.v().get("k").data().asFloat());
    }

    @Test
    void statesOfDifferentStepsAreRejected() {
        TrainState a = state(new float[] {1}, new float[] {1}, new float[] {1}, 3);
        TrainState b = state(new float[] {1}, new float[] {1}, new float[] {1}, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> StateSum.of(a, 1).add(b, 1));
        assertTrue(e.getMessage().contains("step 3 [k] vs step 4 [k]"), e.getMessage());
        IllegalArgumentException w = assertThrows(IllegalArgumentException.class, () -> StateSum.of(a, 0));
        assertTrue(w.getMessage().contains("must be positive, got 0"), w.getMessage());
    }

    private static TrainState state(float[] p, float[] m, float[] v, long step) {
        return new TrainState(map(p), map(m), map(v), step);
    }

    private static LinkedHashMap<String, INDArray> map(float[] values) {
        LinkedHashMap<String, INDArray> out = new LinkedHashMap<>();
        out.put("k", Nd4j.create(values, new long[] {values.length}, 'c').castTo(DataType.FLOAT));
        return out;
    }
}
