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
import org.sparkmoe.kernels.Nd4jGroupedGemm;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A Hugging Face model folder (config.json + safetensors) read through the Hadoop FileSystem API, and the
 * per-JVM cache that lets every task of an executor share one loaded model.
 */
public final class ModelFolder {
    private static final Map<String, MoeTransformer> LOADED = new ConcurrentHashMap<>();

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
            throw new UncheckedIOException("reading " + file, e);
        }
    }

    /** Loads the model with the ND4J grouped GEMM (no caching). */
    public static MoeTransformer load(Path dir, Configuration conf) {
        return load(dir, conf, new Nd4jGroupedGemm());
    }

    public static MoeTransformer load(Path dir, Configuration conf, GroupedGemm gemm) {
        ModelConfig config = readConfig(dir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            return ModelLoader.load(config, checkpoint, gemm);
        }
    }

    /** The model at {@code uri}, loaded once per JVM and shared by every caller (immutable after loading). */
    public static MoeTransformer cached(String uri) {
        return LOADED.computeIfAbsent(uri, u -> load(new Path(u), new Configuration()));
    }
}
