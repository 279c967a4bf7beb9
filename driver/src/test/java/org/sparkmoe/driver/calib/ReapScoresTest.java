package org.sparkmoe.driver.calib;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** expert-scores.json as the report reads it: "reap" per decoder layer, optional. */
class ReapScoresTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void readsReapByDecoderLayerAndSkipsLayersWithout() throws Exception {
        Map<Integer, double[]> reap = ReapScores.parse(JSON.readTree("""
                {"layers": [{"layer": 1, "experts": 3, "top_k": 2, "frequency": [1, 2, 3], "reap": [0.5, 2, 0]},
                            {"layer": 3, "experts": 3, "top_k": 2, "frequency": [1, 2, 3]}]}"""), "f.json");
        assertEquals(1, reap.size());
        assertArrayEquals(new double[]{0.5, 2, 0}, reap.get(1));
        assertEquals(Map.of(), ReapScores.parse(JSON.readTree("{}"), "f.json"));
    }

    @Test
    void aScoreThatIsNoNumberIsNamed() throws Exception {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ReapScores.parse(
                JSON.readTree("{\"layers\": [{\"layer\": 2, \"reap\": [1, \"x\"]}]}"), "f.json"));
        assertEquals("f.json: layer 2 reap[1] is \"x\", expected a number", e.getMessage());
    }
}
