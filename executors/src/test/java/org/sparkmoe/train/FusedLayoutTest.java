package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointFormatException;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.FusingTensors;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.MoeTransformer;

/**
 * transformers-5 fused expert tensors ({@code mlp.experts.gate_up_proj} [E, 2I, D], {@code mlp.experts.down_proj}
 * [E, D, I}) for every MoE type: each tiny fixture written fused by {@link FusingTensors} loads through
 * {@link FusedExperts} into the same model, so its logits equal the per-expert checkpoint's bit for bit; the fused
 * Mixtral keeps its router under {@code mlp.gate} as transformers renames it. (That the orientation is
 * transformers' own is checked against tensors transformers fused, in {@code Qwen3OlmoeParityTest}.)
 */
class FusedLayoutTest {

    @ParameterizedTest
    @ValueSource(strings = {TinyModels.MIXTRAL, TinyModels.QWEN, TinyModels.QWEN3, TinyModels.OLMOE})
    void fusedCheckpointGivesBitIdenticalLogits(String fixture, @TempDir Path tmp) {
        Configuration conf = new Configuration();
        org.apache.hadoop.fs.Path dir = TinyModels.folder(fixture);
        org.apache.hadoop.fs.Path out = new org.apache.hadoop.fs.Path(tmp.resolve("fused").toUri());
        ModelConfig c = ModelFolder.readConfig(dir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            FusingTensors fused = FusingTensors.of(checkpoint, c);
            List<String> names = new ArrayList<>(ModelSchema.expected(c).keySet());
            if (c.tie_word_embeddings && !checkpoint.has("lm_head.weight")) {
                names.remove("lm_head.weight");
            }
            CheckpointFolderWriter.write(dir, c.jsonCopy(), fused, fused.names(names), Map.of(), out, conf,
                    CheckpointFolderWriter.DEFAULT_SHARD_BYTES, null);
        }
        try (SafeTensorsFile written = SafeTensorsFile.open(tmp.resolve("fused/model.safetensors"))) {
            int moe = c.isMoeLayer(0) ? 0 : 2;
            assertArrayEquals(new long[] {c.num_experts, 2L * c.expert_intermediate_size, c.hidden_size},
                    written.info(FusedExperts.gateUp(moe)).shape());
            assertArrayEquals(new long[] {c.num_experts, c.hidden_size, c.expert_intermediate_size},
                    written.info(FusedExperts.down(moe)).shape());
            assertTrue(written.has(FusedExperts.router(moe)), "router under mlp.gate");
            assertFalse(written.names().stream().anyMatch(n -> n.contains(".experts.0.")), "per-expert keys left");
            assertFalse(written.names().stream().anyMatch(n -> n.contains("block_sparse_moe")), "mixtral renamed");
        }
        MoeTransformer perExpert = ModelFolder.load(dir, conf);
        MoeTransformer fused = ModelFolder.load(out, conf);
        int[][] windows = TinyModels.windows(perExpert, 2, 16, 31);
        assertArrayEquals(perExpert.logits(windows).data().asFloat(), fused.logits(windows).data().asFloat(), fixture);
    }

    /**
     * The writer takes a fused tensor expert by expert ({@link FusingTensors#readFloatBlock}: one expert's slice at a
     * time, never the whole [E, 2I, D] that {@link FusingTensors#readFloat} builds) and writes the same bytes as
     * from the whole tensor.
     */
    @ParameterizedTest
    @ValueSource(strings = {TinyModels.MIXTRAL, TinyModels.GPT_OSS})
    void theWriterTakesAFusedTensorExpertByExpertWritingTheSameBytes(String fixture, @TempDir Path tmp)
            throws java.io.IOException {
        Configuration conf = new Configuration();
        org.apache.hadoop.fs.Path dir = TinyModels.folder(fixture);
        ModelConfig c = ModelFolder.readConfig(dir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            FusingTensors fused = FusingTensors.of(checkpoint, c);
            List<String> expected = new ArrayList<>(ModelSchema.expected(c).keySet());
            if (c.tie_word_embeddings && !checkpoint.has("lm_head.weight")) {
                expected.remove("lm_head.weight");
            }
            List<String> names = fused.names(expected);
            java.util.Set<String> whole = new java.util.TreeSet<>();
            for (boolean blocks : new boolean[] {true, false}) {
                CheckpointFolderWriter.write(dir, c.jsonCopy(), new Watched(fused, whole, blocks), names, Map.of(),
                        new org.apache.hadoop.fs.Path(tmp.resolve(blocks ? "blocks" : "whole").toUri()), conf,
                        CheckpointFolderWriter.DEFAULT_SHARD_BYTES, null);
                if (blocks) {
                    assertTrue(whole.stream().noneMatch(n -> fused.writeBlocks(n) > 1), "read whole: " + whole);
                    assertTrue(names.stream().anyMatch(n -> fused.writeBlocks(n) == c.num_experts), "nothing fused");
                }
            }
        }
        assertEquals(-1, java.nio.file.Files.mismatch(tmp.resolve("blocks/model.safetensors"),
                tmp.resolve("whole/model.safetensors")), fixture);
    }

    /** The fused view as the writer sees it, recording the tensors read whole; with {@code blocks} false, all are. */
    private record Watched(FusingTensors fused, java.util.Set<String> whole, boolean blocks) implements TensorSource {
        public boolean has(String name) {
            return fused.has(name);
        }

        public long[] shape(String name) {
            return fused.shape(name);
        }

        public org.sparkmoe.io.DType dtype(String name) {
            return fused.dtype(name);
        }

        public INDArray readFloat(String name) {
            whole.add(name);
            return fused.readFloat(name);
        }

        public long writeBlocks(String name) {
            return blocks ? fused.writeBlocks(name) : 1;
        }

        public INDArray readFloatBlock(String name, long block) {
            return blocks ? fused.readFloatBlock(name, block) : TensorSource.super.readFloatBlock(name, block);
        }

        public String describe() {
            return fused.describe();
        }
    }

    /** A fused tensor too small for the config's experts is refused with its name and shape. */
    @Test
    void fusedTensorOfTheWrongShapeIsNamed() {
        Configuration conf = new Configuration();
        org.apache.hadoop.fs.Path dir = TinyModels.folder(TinyModels.OLMOE);
        ModelConfig c = ModelFolder.readConfig(dir, conf);
        Map<String, INDArray> tensors = new HashMap<>();
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            FusingTensors fused = FusingTensors.of(checkpoint, c);
            for (String name : fused.names(new ArrayList<>(ModelSchema.expected(c).keySet()))) {
                tensors.put(name, fused.readFloat(name));
            }
        }
        // one expert too few in layer 1's gate_up_proj
        INDArray gateUp = tensors.get(FusedExperts.gateUp(1));
        tensors.put(FusedExperts.gateUp(1), gateUp.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(0,
                c.num_experts - 1)).dup('c'));
        TensorSource source = new InMemory(tensors);
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> ModelSchema.check(c, source));
        assertTrue(e.getMessage().contains(FusedExperts.gateUp(1)) && e.getMessage().contains("[5, 32, 32]"),
                e.getMessage());
    }

    private record InMemory(Map<String, INDArray> tensors) implements TensorSource {
        public boolean has(String name) {
            return tensors.containsKey(name);
        }

        public long[] shape(String name) {
            return tensors.get(name).shape();
        }

        public INDArray readFloat(String name) {
            return tensors.get(name).castTo(DataType.FLOAT).dup('c');
        }

        public String describe() {
            return "in-memory olmoe-tiny";
        }
    }
}
