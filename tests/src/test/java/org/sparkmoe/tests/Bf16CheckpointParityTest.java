package org.sparkmoe.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ElementEncoder;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.surgery.SurgeryCheckpoint;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * A bf16 checkpoint computes with its weights where they lie (memory-mapped, widened per tile) and gives exactly
 * the logits, hidden states and router logits of its float32 widening: the bundled model rounded to bf16, against
 * the same values written as F32.
 */
class Bf16CheckpointParityTest {

    @TempDir
    Path tmp;

    private static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    /** The bundled model with every tensor rounded to bf16 (stored BF16), in {@code dir}. */
    private static void writeBf16(Path dir) throws IOException {
        Files.createDirectories(dir);
        Files.copy(Fixtures.tinyModel().resolve("config.json"), dir.resolve("config.json"));
        List<NamedTensor> tensors = new ArrayList<>();
        try (Checkpoint source = Checkpoint.open(hadoop(Fixtures.tinyModel()), new Configuration())) {
            for (String name : source.names()) {
                float[] values = source.readFloat(name).data().asFloat();
                ByteBuffer bytes = ByteBuffer.allocate(values.length * 2).order(ByteOrder.LITTLE_ENDIAN);
                ElementEncoder.fromFloats(DType.BF16, values, 0, values.length, bytes);
                tensors.add(new NamedTensor.Streamed(name, DType.BF16, source.shape(name),
                        out -> out.write(bytes.array())));
            }
        }
        SafeTensorsWriter.write(FileSystem.getLocal(new Configuration()), hadoop(dir.resolve("model.safetensors")),
                tensors, Map.of("format", "pt"));
    }

    /** The checkpoint in {@code from} widened to F32, in {@code dir}. */
    private static void writeWidened(Path from, Path dir) throws IOException {
        Files.createDirectories(dir);
        Files.copy(from.resolve("config.json"), dir.resolve("config.json"));
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        try (Checkpoint source = Checkpoint.open(hadoop(from), new Configuration())) {
            for (String name : source.names()) {
                assertEquals(DType.BF16, source.dtype(name), name);
                tensors.put(name, source.readFloat(name));
            }
        }
        SafeTensorsWriter.write(FileSystem.getLocal(new Configuration()), hadoop(dir.resolve("model.safetensors")),
                tensors, Map.of("format", "pt"));
    }

    private static ForwardOutput forward(Path dir) {
        MoeTransformer model = ModelFolder.load(hadoop(dir), new Configuration());
        int[][] tokens = new int[3][17];
        for (int b = 0; b < tokens.length; b++) {
            for (int s = 0; s < tokens[b].length; s++) {
                tokens[b][s] = (b * 131 + s * 37) % model.config().vocab_size;
            }
        }
        return model.forward(tokens, model.config().num_experts_per_tok, true);
    }

    @Test
    void bf16LogitsEqualThoseOfItsFloat32WideningExactly() throws IOException {
        Path bf16 = tmp.resolve("bf16");
        Path f32 = tmp.resolve("f32");
        writeBf16(bf16);
        writeWidened(bf16, f32);
        ForwardOutput narrow = forward(bf16);
        ForwardOutput wide = forward(f32);
        assertArrayEquals(wide.logits().data().asFloat(), narrow.logits().data().asFloat(), "logits");
        assertEquals(wide.hiddenStates().size(), narrow.hiddenStates().size());
        for (int n = 0; n < wide.hiddenStates().size(); n++) {
            assertArrayEquals(wide.hiddenStates().get(n).data().asFloat(),
                    narrow.hiddenStates().get(n).data().asFloat(), "hidden_states." + n);
        }
        for (int n = 0; n < wide.routerLogits().size(); n++) {
            assertArrayEquals(wide.routerLogits().get(n).data().asFloat(),
                    narrow.routerLogits().get(n).data().asFloat(), "router_logits." + n);
        }
    }

    @Test
    void surgeryOnABf16ModelWritesBf16() throws IOException {
        Path bf16 = tmp.resolve("bf16");
        writeBf16(bf16);
        String w2 = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
        Path out = tmp.resolve("out");
        try (Checkpoint source = Checkpoint.open(hadoop(bf16), new Configuration())) {
            INDArray doubled = source.readFloat(w2).mul(2);                        // exact in bf16
            ObjectNode config = (ObjectNode) new ObjectMapper().readTree(bf16.resolve("config.json").toFile());
            SurgeryCheckpoint.write(hadoop(bf16), config, Map.of(w2, doubled), Map.of(), hadoop(out),
                    new Configuration());
            try (Checkpoint written = Checkpoint.open(hadoop(out), new Configuration())) {
                assertEquals(source.names(), written.names());
                for (String name : written.names()) {
                    assertEquals(DType.BF16, written.dtype(name), name);
                    INDArray expected = name.equals(w2) ? doubled : source.readFloat(name);
                    assertArrayEquals(expected.data().asFloat(), written.readFloat(name).data().asFloat(), name);
                }
            }
        }
        assertEquals("bfloat16", new ObjectMapper().readTree(out.resolve("config.json").toFile()).get("dtype").asText());
        assertEquals(3, forward(out).routerLogits().get(0).size(0) / 17);
    }
}
