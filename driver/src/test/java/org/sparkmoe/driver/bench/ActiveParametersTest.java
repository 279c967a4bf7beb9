package org.sparkmoe.driver.bench;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.model.ModelFolder;

import static org.junit.jupiter.api.Assertions.assertEquals;

class ActiveParametersTest {
    private static double count(String folder) {
        Path dir = new Path(new java.io.File("..", folder).getAbsoluteFile().toURI());
        Configuration conf = new Configuration();
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            return ActiveParameters.perToken(checkpoint, ModelFolder.readConfig(dir, conf));
        }
    }

    /** The bundled Mixtral: 4 layers of D 128, 4 heads of 32 (2 for k, v), 8 experts of 256, top-2, vocabulary 1024. */
    @Test
    void mixtralCountsAttentionTwoOfEightExpertsTheRoutersAndTheHead() {
        long attention = 128 * 128 + 2 * (64 * 128) + 128 * 128;     // q, k, v, o
        long experts = 2 * 3 * 256 * 128;                             // K of E experts' w1, w3, w2
        long router = 8 * 128;
        long head = 1024 * 128;                                       // the embedding is a lookup: not counted
        assertEquals(4 * (attention + experts + router) + head, count("examples/models/mixtral-tiny"), 0);
    }

    /** The qwen2_moe fixture: D 32, layers 0 and 2 MoE (6 experts of 16, top-2, a gated shared expert of 24), 1 dense. */
    @Test
    void qwenCountsTheSharedExpertAndTheDenseLayerWhole() {
        long attention = 32 * 32 + 2 * (16 * 32) + 32 * 32;          // the q/k/v biases are vectors: not counted
        long moe = 2 * 3 * 16 * 32 + 6 * 32 + 3 * 24 * 32 + 32;       // routed K of E, router, shared, its gate
        long dense = 3 * 48 * 32;
        long head = 64 * 32;
        assertEquals(3 * attention + 2 * moe + dense + head,
                count("tests/src/test/resources/reference/qwen2-moe-tiny"), 0);
    }
}
