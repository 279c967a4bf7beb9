package org.sparkmoe.tests;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.train.TrainState;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** Assertions on train states. */
final class TrainStates {
    private TrainStates() {
    }

    /** The same step, keys in the same order, and the same float32 bits in every parameter and both moments. */
    static void assertSameBits(TrainState expected, TrainState actual) {
        assertEquals(expected.step(), actual.step());
        assertEquals(List.copyOf(expected.params().keySet()), List.copyOf(actual.params().keySet()));
        assertSameBits(expected.params(), actual.params(), "");
        assertSameBits(expected.m(), actual.m(), "m ");
        assertSameBits(expected.v(), actual.v(), "v ");
    }

    private static void assertSameBits(Map<String, INDArray> expected, Map<String, INDArray> actual, String kind) {
        for (String key : expected.keySet()) {
            assertArrayEquals(expected.get(key).dup('c').data().asFloat(), actual.get(key).dup('c').data().asFloat(),
                    kind + key);
        }
    }
}
