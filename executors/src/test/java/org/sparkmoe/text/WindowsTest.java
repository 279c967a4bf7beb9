package org.sparkmoe.text;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class WindowsTest {

    @Test
    void cutsNonOverlappingAndDropsRemainder() {
        int[] tokens = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
        int[][] w = Windows.cut(tokens, 4);
        assertArrayEquals(new int[][] {{0, 1, 2, 3}, {4, 5, 6, 7}}, w);
    }

    @Test
    void exactMultipleAndTooShort() {
        assertEquals(3, Windows.cut(new int[6], 2).length);
        assertEquals(0, Windows.cut(new int[255], 256).length);
        assertEquals(0, Windows.cut(new int[0], 256).length);
    }

    @Test
    void windowBelowTwoIsRejected() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Windows.cut(new int[10], 1));
        assertEquals("--window must be ≥ 2, got 1", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Windows.cut(new int[10], 0));
        assertEquals("--window must be ≥ 2, got 0", e.getMessage());
    }
}
