package org.sparkmoe.surgery;

import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.model.ModelFolder;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.CheckpointOptions;
import org.sparkmoe.model.ModelSchema;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Writes the checkpoint a surgery produced: the new config.json decides which tensors the folder holds (exactly
 * {@link ModelSchema#expected} of it, in that order); each reads from the surgery's new tensors when there is one,
 * else from the original checkpoint. Extra files (the report, an expert map) go into the same folder.
 */
public final class SurgeryCheckpoint {
    private SurgeryCheckpoint() {
    }

    public static void write(Path modelDir, ObjectNode newConfig, Map<String, INDArray> replaced,
            Map<String, byte[]> extraFiles, Path outDir, Configuration conf) {
        write(modelDir, newConfig, replaced, extraFiles, outDir, conf, CheckpointOptions.DEFAULT);
    }

    /** As above, written as {@code options} say (layout, shard size, dtype). */
    public static void write(Path modelDir, ObjectNode newConfig, Map<String, INDArray> replaced,
            Map<String, byte[]> extraFiles, Path outDir, Configuration conf, CheckpointOptions options) {
        write(modelDir, newConfig, replaced, Map.of(), extraFiles, outDir, conf, options);
    }

    /**
     * As above, with {@code renamed} tensors (new name → original name, {@link LayerSurgery#renamed}) read from the
     * original checkpoint as stored.
     */
    public static void write(Path modelDir, ObjectNode newConfig, Map<String, INDArray> replaced,
            Map<String, String> renamed, Map<String, byte[]> extraFiles, Path outDir, Configuration conf,
            CheckpointOptions options) {
        ModelConfig config = ModelConfig.parse(newConfig.toString(), new Path(outDir, "config.json").toString());
        ModelConfig originalConfig = ModelFolder.readConfig(modelDir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(modelDir, conf)) {
            TensorSource original = FusedExperts.perExpert(checkpoint, originalConfig);
            OverlayTensors tensors = new OverlayTensors(original, replaced, renamed);
            List<String> names = new ArrayList<>();
            for (String name : ModelSchema.expected(config).keySet()) {
                if (!(name.equals(CheckpointLayout.lmHead()) && config.tie_word_embeddings && !tensors.has(name))) {
                    names.add(name);
                }
            }
            ExpertLayout layout = options.layout();
            ExpertLayout.Written written = (layout == null ? ExpertLayout.of(checkpoint, originalConfig) : layout)
                    .apply(tensors, names, config);
            CheckpointFolderWriter.write(modelDir, withoutMtp(newConfig), written.tensors(), written.names(),
                    extraFiles, outDir, conf, options.maxShardBytes(), options.dtype());
        }
    }

    /**
     * The config with DeepSeek's multi-token-prediction layers (after the last decoder layer) set to none: surgery
     * writes the tensors of the main model only.
     */
    private static ObjectNode withoutMtp(ObjectNode config) {
        ObjectNode json = config.deepCopy();
        if (json.has("num_nextn_predict_layers")) {
            json.put("num_nextn_predict_layers", 0);
        }
        return json;
    }

    /** UTF-8 bytes of a text file's content. */
    public static byte[] utf8(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }
}
