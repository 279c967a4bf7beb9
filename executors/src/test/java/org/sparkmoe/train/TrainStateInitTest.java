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

/** The driver's initial state, read from config.json and the checkpoint, is the one built from the loaded model. */
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
}
