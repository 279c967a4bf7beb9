package org.sparkmoe.adapter;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.OwnedArrays;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The models an executor JVM has loaded, each once and shared by every task of the JVM (immutable after loading):
 * a model folder (its weights memory-mapped), optionally with a PEFT adapter applied unmerged ({@link AdaptedModel}:
 * the adapted model shares the base's weights), with its expert grouped GEMMs on a device.
 *
 * <p>Bounded by bytes: what a cached model owns off-heap ({@link MoeTransformer#ownedBytes()}: the tensors widened at
 * load, an adapter's factors; mapped weights are file-backed pages the kernel reclaims and are not counted) may total
 * at most {@link #limitBytes()} ({@value #LIMIT_ENV}, default 2 GiB). Loading a model evicts the least recently used models that no task holds (and that no
 * cached adapted model is built on) until the rest fit, and frees their arrays at once. A task holds a model through
 * a {@link Lease} for as long as it computes with it; a model in use is never freed, so the cache may pass its bound
 * while more models are in use at once than fit.
 */
public final class ModelCache {
    /**
     * The environment variable that sets the bound in bytes ({@value}; on a cluster pass it to the executors with
     * {@code --conf spark.executorEnv.SPARKMOE_MODEL_CACHE_BYTES=N}); the default is {@link #DEFAULT_LIMIT_BYTES}.
     */
    public static final String LIMIT_ENV = "SPARKMOE_MODEL_CACHE_BYTES";
    public static final long DEFAULT_LIMIT_BYTES = 2L << 30;

    private static final Map<String, Entry> LOADED = new LinkedHashMap<>(16, 0.75f, true); // least recently used first
    private static long limitBytes = -1;    // read from the environment on first use

    private ModelCache() {
    }

    /** One cached model: how many leases (tasks, and adapted models built on it) hold it. */
    private static final class Entry {
        final MoeTransformer model;
        final Entry base;   // the cached model an adapted one shares its weights with, or null
        int holders;

        Entry(MoeTransformer model, Entry base) {
            this.model = model;
            this.base = base;
        }
    }

    /** A task's hold on a cached model: the model stays loaded until the lease is closed. */
    public static final class Lease implements AutoCloseable {
        private Entry entry;

        private Lease(Entry entry) {
            this.entry = entry;
        }

        public MoeTransformer model() {
            if (entry == null) {
                throw new IllegalStateException("this lease on a cached model was closed");
            }
            return entry.model;
        }

        @Override
        public void close() {
            synchronized (ModelCache.class) {
                if (entry != null) {
                    entry.holders--;
                    entry = null;
                }
            }
        }
    }

    /**
     * Loads the model on {@code device} with the adapter folder {@code adapterDir} (PEFT LoRA or μMoE) applied (see
     * {@link AdaptedModel#read}), read with {@code peftVersion} (--peft-version, null: none; see
     * {@link PeftAdapter#read(Path, Configuration, org.sparkmoe.io.ModelConfig, String)}); {@code adapterDir} null
     * loads the plain model. Not cached.
     */
    public static MoeTransformer load(Path dir, Configuration conf, Path adapterDir, String peftVersion, Device device) {
        MoeTransformer base = ModelFolder.load(dir, conf, device);
        return adapterDir == null ? base : AdaptedModel.read(base, adapterDir, conf, peftVersion);
    }

    /** The model at {@code uri} on the CPU; as {@link #lease(String, Device)}. */
    public static Lease lease(String uri) {
        return lease(uri, Device.CPU);
    }

    /**
     * The model at {@code uri} with its expert GEMMs on {@code device}, loaded once per JVM and shared by every
     * caller (immutable after loading) while it stays cached. The cache key holds the device: a JVM asked for both
     * keeps two models.
     */
    public static Lease lease(String uri, Device device) {
        return lease(uri, null, null, device);
    }

    /**
     * As {@link #lease(String, Device)}, with the adapter at {@code adapterUri} applied (null: the plain model) to
     * the cached base model, whose weights it shares, read with {@code peftVersion} (--peft-version, null: none; see
     * {@link PeftAdapter#read(Path, Configuration, org.sparkmoe.io.ModelConfig, String)}). The cache key includes the
     * adapter weights' modification time and length, so an adapter folder rewritten in place (a newer training
     * checkpoint) is loaded afresh, and the PEFT version.
     */
    public static Lease lease(String modelUri, String adapterUri, String peftVersion, Device device) {
        return lease(modelUri, adapterUri, peftVersion, MutedExperts.NONE, device);
    }

    /**
     * As {@link #lease(String, String, String, Device)}, with {@code muted}'s experts of a μMoE adapter silenced
     * ({@link AdaptedModel#read(MoeTransformer, Path, Configuration, String, MutedExperts)}); the muted experts are
     * part of the cache key, so a JVM may hold the adapter both muted and not, on the same base model.
     */
    public static synchronized Lease lease(String modelUri, String adapterUri, String peftVersion, MutedExperts muted,
                                           Device device) {
        Entry entry = entry(modelUri, adapterUri, peftVersion, muted, device);
        entry.holders++;
        return new Lease(entry);
    }

    private static Entry entry(String modelUri, String adapterUri, String peftVersion, MutedExperts muted,
                               Device device) {
        String key = cacheKey(modelUri, adapterUri, peftVersion, device)
                + (muted.isEmpty() ? "" : " muting " + muted);
        Entry cached = LOADED.get(key);
        if (cached != null) {
            return cached;
        }
        Entry entry;
        if (adapterUri == null) {
            entry = new Entry(ModelFolder.load(new Path(modelUri), new Configuration(), device), null);
        } else {
            Entry base = entry(modelUri, null, null, MutedExperts.NONE, device);
            entry = new Entry(AdaptedModel.read(base.model, new Path(adapterUri), new Configuration(), peftVersion,
                    muted), base);
            base.holders++;
        }
        LOADED.put(key, entry);
        evictBeyond(limitBytes(), entry);
        return entry;
    }

    /**
     * Evicts the least recently used entries no one holds, except {@code keep}, while the cached models own more
     * than {@code limit} bytes; frees their arrays and releases their hold on the models they are built on.
     */
    private static void evictBeyond(long limit, Entry keep) {
        boolean evicted = true;
        while (evicted && ownedBytes() > limit) {
            evicted = false;
            for (Iterator<Entry> it = LOADED.values().iterator(); it.hasNext(); ) {
                Entry e = it.next();
                if (e != keep && e.holders == 0) {   // a base model is held by the adapted models on it
                    it.remove();
                    e.model.release();
                    if (e.base != null) {
                        e.base.holders--;
                    }
                    evicted = true;
                    break;
                }
            }
        }
    }

    /** Off-heap bytes the cached models own (see {@link OwnedArrays}). */
    public static synchronized long ownedBytes() {
        long total = 0;
        for (Entry e : LOADED.values()) {
            total += e.model.ownedBytes();
        }
        return total;
    }

    /** The cache keys of the models cached now, least recently used first. */
    static synchronized List<String> cachedKeys() {
        return new ArrayList<>(LOADED.keySet());
    }

    /** The bound on {@link #ownedBytes()}: {@value #LIMIT_ENV} when set, else 2 GiB. */
    public static synchronized long limitBytes() {
        if (limitBytes < 0) {
            limitBytes = parseLimit(System.getenv(LIMIT_ENV));
        }
        return limitBytes;
    }

    /** The bound {@code value} of {@value #LIMIT_ENV} sets (null: the default), in bytes. */
    static long parseLimit(String value) {
        if (value == null || value.isBlank()) {
            return DEFAULT_LIMIT_BYTES;
        }
        try {
            long bytes = Long.parseLong(value.trim());
            if (bytes >= 0) {
                return bytes;
            }
        } catch (NumberFormatException e) {
            // named below
        }
        throw new IllegalArgumentException(LIMIT_ENV + " must be a number of bytes >= 0, got '" + value + "'");
    }

    /** Sets the bound and evicts down to it; for tests. */
    static synchronized void limitBytes(long bytes) {
        limitBytes = bytes;
        evictBeyond(bytes, null);
    }

    /**
     * What the per-JVM cache tells models apart by: the device ({@link Device#cacheTag}: a GPU's ordinal too), the
     * model URI and, with an adapter, its URI and the
     * version (modification time and length) of its weights file and the --peft-version it is read with.
     */
    static String cacheKey(String modelUri, String adapterUri, String peftVersion, Device device) {
        String key = device.cacheTag() + " " + modelUri;
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
