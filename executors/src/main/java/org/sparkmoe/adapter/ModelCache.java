package org.sparkmoe.adapter;

import org.sparkmoe.io.FusedExperts;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelLoader;
import org.sparkmoe.model.MoeTransformer;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The models an executor JVM has loaded, each once and shared by every task of the JVM (immutable after loading):
 * a model folder, optionally with a PEFT adapter merged into its expert weights (and routers, when the adapter
 * trained them), with its expert grouped GEMMs on a device.
 */
public final class ModelCache {
    private static final Map<String, MoeTransformer> LOADED = new ConcurrentHashMap<>();

    private ModelCache() {
    }

    /**
     * Loads the model on {@code device} with the PEFT adapter folder {@code adapterDir} merged into its expert
     * weights (and its routers, when the adapter trained them); {@code adapterDir} null loads the plain model.
     */
    public static MoeTransformer load(Path dir, Configuration conf, Path adapterDir, Device device) {
        if (adapterDir == null) {
            return ModelFolder.load(dir, conf, device);
        }
        ModelConfig config = ModelFolder.readConfig(dir, conf);
        PeftAdapter adapter = PeftAdapter.read(adapterDir, conf, config);
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            return ModelLoader.load(config, new MergedTensors(FusedExperts.perExpert(checkpoint, config), adapter),
                    device.groupedGemm());
        }
    }

    /** The model at {@code uri} on the CPU, loaded once per JVM; as {@link #cached(String, Device)}. */
    public static MoeTransformer cached(String uri) {
        return cached(uri, Device.CPU);
    }

    /**
     * The model at {@code uri} with its expert GEMMs on {@code device}, loaded once per JVM and shared by every
     * caller (immutable after loading). The cache key holds the device: a JVM asked for both keeps two models.
     */
    public static MoeTransformer cached(String uri, Device device) {
        return LOADED.computeIfAbsent(cacheKey(uri, null, device),
                u -> ModelFolder.load(new Path(uri), new Configuration(), device));
    }

    /**
     * As {@link #cached(String, Device)}, with the adapter at {@code adapterUri} merged in (null: the plain model).
     * The cache key includes the adapter weights' modification time and length, so an adapter folder rewritten in
     * place (a newer training checkpoint) is loaded afresh.
     */
    public static MoeTransformer cached(String modelUri, String adapterUri, Device device) {
        if (adapterUri == null) {
            return cached(modelUri, device);
        }
        Configuration conf = new Configuration();
        return LOADED.computeIfAbsent(cacheKey(modelUri, adapterUri, device),
                key -> load(new Path(modelUri), conf, new Path(adapterUri), device));
    }

    /**
     * What the per-JVM cache tells models apart by: the device, the model URI and, with an adapter, its URI and the
     * version (modification time and length) of its weights file.
     */
    static String cacheKey(String modelUri, String adapterUri, Device device) {
        String key = device.flagValue() + " " + modelUri;
        if (adapterUri == null) {
            return key;
        }
        Configuration conf = new Configuration();
        Path weights = new Path(adapterUri, PeftAdapter.WEIGHTS_FILE);
        String version;
        try {
            FileStatus status = weights.getFileSystem(conf).getFileStatus(weights);
            version = status.getModificationTime() + "/" + status.getLen();
        } catch (FileNotFoundException e) {
            version = "missing"; // load() names the missing file
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + weights, e);
        }
        return key + " + adapter " + adapterUri + " @ " + version;
    }
}
