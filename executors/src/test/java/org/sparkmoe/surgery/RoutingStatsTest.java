package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.sparkmoe.io.ModelConfig;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class RoutingStatsTest {
    private static final double[] LOGITS = {2, 4, 6};
    private static final double[] TOPM = {2, 1, 0.5};

    private static String json(int experts) {
        return SurgeryFixtures.statsJson(experts, 2, new long[][] {{2, 1, 1}, {0, 2, 2}},
                new double[][] {LOGITS, LOGITS}, new double[][] {TOPM, TOPM}, new String[] {"a.txt", "b.txt"},
                new long[][][] {{{1, 0, 1}, {0, 1, 1}}, {{1, 1, 0}, {0, 1, 1}}}, 4);
    }

    @Test
    void readsMeansAndFileRates() {
        ModelConfig c = SurgeryFixtures.mixtral(3, 2);
        RoutingStats s = RoutingStats.parse(json(3), "stats", c, 2);
        assertEquals(2, s.moeLayers());
        assertEquals(2, s.files());
        assertArrayEquals(new double[] {1, 2, 3}, s.layer(0).meanLogit(), 0);
        assertEquals(0.5, s.layer(1).meanTopmSq(2), 0);
        assertArrayEquals(new double[] {0.25, 0.25, 0}, s.fileRate(1, 0), 0);
        assertArrayEquals(new long[] {0, 2, 2}, s.layer(1).count());
    }

    @Test
    void aMismatchNamesTheFileAndWhatDiffers() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> RoutingStats.parse(json(3), "/x/router-stats.json", c, 2));
        assertEquals("/x/router-stats.json: describes 3 experts, the model has 4", e.getMessage());
        ModelConfig three = SurgeryFixtures.mixtral(3, 2);
        e = assertThrows(IllegalArgumentException.class, () -> RoutingStats.parse(json(3), "s", three, 3));
        assertTrue(e.getMessage().startsWith("s: \"layers\" must list the model's 3 MoE layers, found 2"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> RoutingStats.parse("{nope", "s", three, 2));
        assertTrue(e.getMessage().startsWith("s: not valid JSON"), e.getMessage());
    }
}
