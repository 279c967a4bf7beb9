package org.sparkmoe.train;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

class TrainStateFileTest {

    @Test
    void roundTripIsExactAndKeepsOrderStepAndMetadata(@TempDir java.nio.file.Path dir) throws Exception {
        Nd4j.getRandom().setSeed(11);
        LinkedHashMap<String, INDArray> params = new LinkedHashMap<>();
        params.put("model.layers.1.block_sparse_moe.experts.w1.lora_A", Nd4j.rand(DataType.FLOAT, 3, 2, 5));
        params.put("model.layers.1.block_sparse_moe.experts.w1.lora_B", Nd4j.rand(DataType.FLOAT, 3, 4, 2));
        params.put("model.layers.0.block_sparse_moe.gate.weight", Nd4j.rand(DataType.FLOAT, 3, 5));
        LinkedHashMap<String, INDArray> m = new LinkedHashMap<>();
        LinkedHashMap<String, INDArray> v = new LinkedHashMap<>();
        params.forEach((k, a) -> {
            m.put(k, a.mul(0.5));
            v.put(k, a.mul(a));
        });
        TrainState state = new TrainState(params, m, v, 17);
        FileSystem fs = FileSystem.getLocal(new Configuration());
        Path file = new Path(dir.toUri().toString(), "state.safetensors");

        TrainStateFile.write(fs, file, state, Map.of("round", "8"));
        TrainStateFile.Loaded loaded = TrainStateFile.read(fs, file);

        assertEquals(17, loaded.state().step());
        assertEquals("8", loaded.metadata().get("round"));
        assertEquals(List.copyOf(params.keySet()), List.copyOf(loaded.state().params().keySet()));
        for (String key : params.keySet()) {
            assertBitsEqual(params.get(key), loaded.state().params().get(key));
            assertBitsEqual(m.get(key), loaded.state().m().get(key));
            assertBitsEqual(v.get(key), loaded.state().v().get(key));
        }
    }

    private static void assertBitsEqual(INDArray expected, INDArray actual) {
        assertArrayEquals(expected.shape(), actual.shape());
        assertArrayEquals(expected.dup('c').data().asFloat(), actual.dup('c').data().asFloat());
    }
}
