package org.sparkmoe.train;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.ModelFolder;

import java.util.ArrayList;
import java.util.EnumSet;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * The driver's initial state, read from config.json and the checkpoint, is the one built from the loaded model; LoRA
 * on the shared expert: its keys and shapes, and the models that refuse it.
 */
class TrainStateInitTest {

    @Test
    void checkpointStateEqualsTheLoadedModelsWithTheRouterTrained() {
        for (String relative : new String[] {TinyModels.MIXTRAL, TinyModels.QWEN}) {
            LoraSpec spec = new LoraSpec(EnumSet.of(Projection.GATE, Projection.DOWN), 4, 8, true);
            TrainState fromModel = TrainState.init(TinyModels.load(relative, DataType.FLOAT), spec, 7, DataType.FLOAT);
            Configuration conf = new Configuration();
            TrainState fromCheckpoint;
            try (Checkpoint checkpoint = Checkpoint.open(TinyModels.folder(relative), conf)) {
                fromCheckpoint = TrainState.init(ModelFolder.readConfig(TinyModels.folder(relative), conf), checkpoint,
                        spec, 7);
            }
            assertEquals(new ArrayList<>(fromModel.params().keySet()), new ArrayList<>(fromCheckpoint.params().keySet()),
                    relative);
            fromModel.params().forEach((key, a) -> {
                assertArrayEquals(a.shape(), fromCheckpoint.params().get(key).shape(), key);
                assertArrayEquals(a.dup('c').data().asFloat(), fromCheckpoint.params().get(key).dup('c').data().asFloat(),
                        relative + " " + key);
            });
            assertEquals(0, fromCheckpoint.step());
        }
    }

    @Test
    void sharedExpertLoraFollowsTheRoutedTargetsOfEachLayer() {
        LoraSpec spec = new LoraSpec(EnumSet.of(Projection.UP, Projection.DOWN), 4, 8, true, true);
        TrainState state = TrainState.init(TinyModels.load(TinyModels.GLM, DataType.FLOAT), spec, 7, DataType.FLOAT);
        // glm4-moe-tiny: layer 0 dense, layers 1 and 2 MoE; D 32, shared experts 1 × moe_intermediate_size 16
        assertEquals(java.util.List.of(
                "model.layers.1.mlp.experts.up_proj.lora_A", "model.layers.1.mlp.experts.up_proj.lora_B",
                "model.layers.1.mlp.experts.down_proj.lora_A", "model.layers.1.mlp.experts.down_proj.lora_B",
                "model.layers.1.mlp.shared_experts.up_proj.lora_A", "model.layers.1.mlp.shared_experts.up_proj.lora_B",
                "model.layers.1.mlp.shared_experts.down_proj.lora_A", "model.layers.1.mlp.shared_experts.down_proj.lora_B",
                "model.layers.1.mlp.gate.weight"),
                new ArrayList<>(state.params().keySet()).subList(0, 9));
        assertEquals(18, state.params().size());
        assertArrayEquals(new long[] {1, 4, 32}, state.params().get("model.layers.2.mlp.shared_experts.up_proj.lora_A").shape());
        assertArrayEquals(new long[] {1, 32, 4}, state.params().get("model.layers.2.mlp.shared_experts.down_proj.lora_B").shape());
    }

    @Test
    void sharedExpertLoraIsRefusedWithoutASharedExpert() {
        LoraSpec spec = new LoraSpec(EnumSet.of(Projection.GATE), 4, 8, false, true);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TrainState.init(TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT), spec, 7, DataType.FLOAT));
        assertEquals("LoRA on the shared expert: model_type mixtral has no shared expert", e.getMessage());
    }
}
