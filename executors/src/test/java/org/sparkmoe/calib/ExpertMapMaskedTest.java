package org.sparkmoe.calib;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** An expert map's optional per-layer "masked" list (surgery prune --global): written, read back, validated. */
class ExpertMapMaskedTest {
    private static final int[][][] GROUPS = {{{0, 3}, {1}, {2}}, {{2}, {0, 1, 3}}};

    @Test
    void maskedExpertsRoundTripAndAreAbsentWithoutThem() {
        ExpertMap map = ExpertMap.of(GROUPS, new int[][] {{1, 2}, {}}, new int[] {4, 4});
        ExpertMap read = ExpertMap.parse(map.toJson(), "map", new int[] {4, 4});
        assertArrayEquals(new int[] {1, 2}, read.masked(0));
        assertArrayEquals(new int[0], read.masked(1));
        assertArrayEquals(new int[] {0, 3}, read.members(0, 0));
        String plain = ExpertMap.of(GROUPS, new int[] {4, 4}).toJson();
        assertFalse(plain.contains("masked"), plain);
        assertArrayEquals(new int[0], ExpertMap.parse(plain, "map", new int[] {4, 4}).masked(0));
    }

    @Test
    void aMaskedEntryOutsideTheGroupsOrOutOfOrderIsRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ExpertMap.parse("{\"layers\":[{\"groups\":[[0],[1]],\"masked\":[2]}]}", "m.json", new int[] {2}));
        assertEquals("m.json: layers[0].masked: 2 is not an ascending new expert index in [0, 2)", e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> ExpertMap.parse("{\"layers\":[{\"groups\":[[0],[1],[2]],\"masked\":[1,1]}]}", "m.json",
                        new int[] {3}));
        assertEquals("m.json: layers[0].masked: 1 is not an ascending new expert index in [0, 3)", e.getMessage());
    }
}
