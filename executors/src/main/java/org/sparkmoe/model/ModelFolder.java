package org.sparkmoe.model;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointFormatException;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.ModelConfigException;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.Device;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;

/**
 * A Hugging Face model folder (config.json + safetensors) read through the Hadoop FileSystem API. Executors load
 * models through the per-JVM cache of {@code adapter.ModelCache}, which can also merge in a PEFT adapter.
 */
public final class ModelFolder {

    private ModelFolder() {
    }

    /** Reads and validates {@code DIR/config.json}. */
    public static ModelConfig readConfig(Path dir, Configuration conf) {
        Path file = new Path(dir, "config.json");
        try {
            FileSystem fs = file.getFileSystem(conf);
            if (!fs.exists(dir)) {
                throw new CheckpointFormatException("model folder not found: " + dir);
            }
            if (!fs.exists(file)) {
                throw new ModelConfigException("no config.json in model folder " + dir);
            }
            try (FSDataInputStream in = fs.open(file)) {
                return ModelConfig.parse(new String(in.readAllBytes(), StandardCharsets.UTF_8), file.toString());
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + (e.getMessage() == null
                    ? e.getClass().getSimpleName() : e.getMessage().lines().findFirst().orElse("")
                    .replaceFirst(";\\s*For more details see:.*$", "")), e);
        }
    }

    /** Loads the model on the CPU (no caching); for tools and tests that run in one JVM. */
    public static MoeTransformer load(Path dir, Configuration conf) {
        return load(dir, conf, Device.CPU);
    }

    /** Loads the model with the expert grouped GEMMs on {@code device} (no caching). */
    public static MoeTransformer load(Path dir, Configuration conf, Device device) {
        return load(dir, conf, device.groupedGemm());
    }

    public static MoeTransformer load(Path dir, Configuration conf, GroupedGemm gemm) {
        ModelConfig config = readConfig(dir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            return ModelLoader.load(config, checkpoint, gemm);
        }
    }
}
