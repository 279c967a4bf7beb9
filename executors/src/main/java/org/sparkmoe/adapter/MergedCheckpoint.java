package org.sparkmoe.adapter;

import org.sparkmoe.io.FusedExperts;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.CheckpointOptions;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;

import java.util.ArrayList;
import java.util.Map;

/**
 * Writes a complete Hugging Face checkpoint folder with a LoRA adapter merged into the expert weights (and a
 * trained router in place of the base router): config.json, every tensor of the source checkpoint in its order,
 * in the source's dtype (merged in float32, then rounded: a bf16 model stays bf16), as one
 * model.safetensors or, past the shard size, model-0000i-of-0000N.safetensors plus model.safetensors.index.json,
 * and every other file of the source folder (tokenizer, generation config) copied. The folder is built in a
 * hidden sibling and renamed into place once complete ({@link CheckpointFolderWriter}).
 */
public final class MergedCheckpoint {
    private MergedCheckpoint() {
    }

    /** Merges the PEFT adapter folder {@code adapterDir} into the model folder {@code modelDir}, writing {@code outDir}. */
    public static void write(Path modelDir, Path adapterDir, Path outDir, Configuration conf) {
        ModelConfig config = ModelFolder.readConfig(modelDir, conf);
        write(modelDir, PeftAdapter.read(adapterDir, conf, config), outDir, conf, CheckpointOptions.DEFAULT);
    }

    /**
     * Merges {@code adapter} (of the model in {@code modelDir}) and writes {@code outDir}, which must not exist, as
     * {@code options} say (layout, shard size: a single larger tensor gets a shard of its own, dtype).
     */
    public static void write(Path modelDir, PeftAdapter adapter, Path outDir, Configuration conf,
                             CheckpointOptions options) {
        ExpertLayout layout = options.layout();
        ModelConfig model = adapter.model();
        try (Checkpoint checkpoint = Checkpoint.open(modelDir, conf)) {
            ModelSchema.check(model, checkpoint);
            // merged per expert (the names the adapter's keys address), then written in the chosen layout
            ExpertLayout.Written written = (layout == null ? ExpertLayout.of(checkpoint, model) : layout).apply(
                    new MergedTensors(FusedExperts.perExpert(checkpoint, model), adapter),
                    new ArrayList<>(FusedExperts.perExpertNames(checkpoint.names(), checkpoint, model)), model);
            CheckpointFolderWriter.write(modelDir, model.jsonCopy(), written.tensors(), written.names(), Map.of(),
                    outDir, conf, options.maxShardBytes(), options.dtype());
        }
    }
}
