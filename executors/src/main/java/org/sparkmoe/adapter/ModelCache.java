package org.sparkmoe.adapter;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The models an executor JVM has loaded, each once and shared by every task of the JVM (immutable after loading):
 * a model folder (its weights memory-mapped), optionally with a PEFT adapter applied unmerged ({@link AdaptedModel}:
 * the adapted model shares the base's weights), with its expert grouped GEMMs on a device.
 */
public final class ModelCache {
    private static final Map<String, MoeTransformer> LOADED = new ConcurrentHashMap<>();

    private ModelCache() {
    }

    /**
     * Loads the model on {@code device} with the PEFT adapter folder {@code adapterDir} applied (see
     * {@link AdaptedModel}), read with {@code peftVersion} (--peft-version, null: none; see
     * {@link PeftAdapter#read(Path, Configuration, org.sparkmoe.io.ModelConfig, String)}); {@code adapterDir} null
     * loads the plain model.
     */
    public static MoeTransformer load(Path dir, Configuration conf, Path adapterDir, String peftVersion, Device device) {
        MoeTransformer base = ModelFolder.load(dir, conf, device);
        return adapterDir == null ? base
                : AdaptedModel.of(base, PeftAdapter.read(adapterDir, conf, base.config(), peftVersion));
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
        return LOADED.computeIfAbsent(cacheKey(uri, null, null, device),
                u -> ModelFolder.load(new Path(uri), new Configuration(), device));
    }

    /**
     * As {@link #cached(String, Device)}, with the adapter at {@code adapterUri} applied (null: the plain model) to
     * the cached base model, whose weights it shares, read with {@code peftVersion} (--peft-version, null: none; see
     * {@link PeftAdapter#read(Path, Configuration, org.sparkmoe.io.ModelConfig, String)}). The cache key includes the
     * adapter weights' modification time and length, so an adapter folder rewritten in place (a newer training
     * checkpoint) is loaded afresh, and the PEFT version.
     */
    public static MoeTransformer cached(String modelUri, String adapterUri, String peftVersion, Device device) {
        MoeTransformer base = cached(modelUri, device);
        if (adapterUri == null) {
            return base;
        }
        Configuration conf = new Configuration();
        return LOADED.computeIfAbsent(cacheKey(modelUri, adapterUri, peftVersion, device),
                key -> AdaptedModel.of(base, PeftAdapter.read(new Path(adapterUri), conf, base.config(), peftVersion)));
    }

    /**
     * What the per-JVM cache tells models apart by: the device, the model URI and, with an adapter, its URI and the
     * version (modification time and length) of its weights file and the --peft-version it is read with.
     */
    static String cacheKey(String modelUri, String adapterUri, String peftVersion, Device device) {
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
        return key + " + adapter " + adapterUri + " @ " + version
                + (peftVersion == null ? "" : " as PEFT " + peftVersion);
    }
}
