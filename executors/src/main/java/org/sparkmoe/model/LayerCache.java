package org.sparkmoe.model;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.MappedPages;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The model pieces an executor JVM holds for a layer-sequential pass: one decoder layer, or the ends (embedding,
 * final norm, LM head), each built alone from the memory-mapped checkpoint ({@link ModelLoader#layer},
 * {@link ModelLoader#ends}) and shared by every task of the JVM, keyed by (device, model, piece).
 *
 * <p>Bounded by count: at most {@link #MAX_PIECES} pieces stay cached. Building a piece evicts the least recently used
 * pieces no task holds beyond that bound and frees their arrays at once, so when a pass moves on to layer l + 1 the
 * JVM lets go of layer l: its owned arrays are freed and its mapped checkpoint pages leave the process's resident set
 * ({@link MappedPages#release}; they stay in the node's page cache). A cached piece no task holds keeps its arrays
 * but not its resident pages once another piece is leased. A task holds a piece through a
 * {@link Lease} while it computes with it; a held piece is never freed.
 */
public final class LayerCache {
    /** Pieces kept: the layer being run and one more (the ends, or the layer before). */
    public static final int MAX_PIECES = 2;
    /** The piece index of the ends. */
    private static final int ENDS = -1;

    private static final Map<String, Entry> LOADED = new LinkedHashMap<>(16, 0.75f, true); // least recently used first

    private LayerCache() {
    }

    /** One decoder layer and the RoPE tables it reads. */
    public record Layer(DecoderLayer decoder, RotaryEmbedding rope) {
    }

    private static final class Entry {
        final Object piece;
        final OwnedArrays owned;
        final MappedPages pages;   // the checkpoint bytes the piece computes with, over the node's file maps
        int holders;
        boolean resident = true;   // its pages may be in the process's resident set

        Entry(Object piece, OwnedArrays owned, MappedPages pages) {
            this.piece = piece;
            this.owned = owned;
            this.pages = pages;
        }
    }

    /** A task's hold on a cached piece: it stays cached until the lease is closed. */
    public static final class Lease<T> implements AutoCloseable {
        private final Class<T> type;
        private Entry entry;

        private Lease(Class<T> type, Entry entry) {
            this.type = type;
            this.entry = entry;
        }

        public T get() {
            if (entry == null) {
                throw new IllegalStateException("this lease on a cached model piece was closed");
            }
            return type.cast(entry.piece);
        }

        @Override
        public void close() {
            synchronized (LayerCache.class) {
                if (entry != null) {
                    entry.holders--;
                    entry = null;
                }
            }
        }
    }

    /** Decoder layer {@code l} of the model at {@code modelUri}, its expert GEMMs on {@code device}. */
    public static synchronized Lease<Layer> layer(String modelUri, Device device, int l) {
        return lease(Layer.class, modelUri, device, l);
    }

    /** The embedding, final norm and LM head of the model at {@code modelUri}. */
    public static synchronized Lease<ModelEnds> ends(String modelUri, Device device) {
        return lease(ModelEnds.class, modelUri, device, ENDS);
    }

    private static <T> Lease<T> lease(Class<T> type, String modelUri, Device device, int piece) {
        String key = device.cacheTag() + " " + modelUri + " " + (piece == ENDS ? "ends" : "layer " + piece);
        Entry entry = LOADED.get(key);
        if (entry == null) {
            Configuration conf = new Configuration();
            Path dir = new Path(modelUri);
            ModelConfig config = ModelFolder.readConfig(dir, conf);
            MappedPages pages = new MappedPages();
            try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
                if (piece == ENDS) {
                    ModelLoader.Piece<ModelEnds> ends = ModelLoader.ends(config, checkpoint.recording(pages));
                    entry = new Entry(ends.piece(), ends.owned(), pages);
                } else {
                    ModelLoader.Piece<DecoderLayer> layer = ModelLoader.layer(config, checkpoint.recording(pages),
                            device.groupedGemm(), piece);
                    entry = new Entry(new Layer(layer.piece(), RotaryEmbedding.of(config)), layer.owned(), pages);
                }
            }
            LOADED.put(key, entry);
            evictBeyond(MAX_PIECES, entry);
        }
        entry.holders++;
        entry.resident = true;
        releaseIdlePages(entry);
        return new Lease<>(type, entry);
    }

    /**
     * Lets go of the mapped pages of every cached piece no task holds but {@code current}: a pass runs one piece at a
     * time, so the process keeps one piece's pages resident, not {@link #MAX_PIECES}; a piece used again (the ends,
     * after the last layer) faults its pages back in from the page cache.
     */
    private static void releaseIdlePages(Entry current) {
        for (Entry e : LOADED.values()) {
            if (e != current && e.holders == 0 && e.resident) {
                e.pages.release();
                e.resident = false;
            }
        }
    }

    /** Evicts the least recently used pieces no one holds, except {@code keep}, while more than {@code limit} stay. */
    private static void evictBeyond(int limit, Entry keep) {
        for (Iterator<Entry> it = LOADED.values().iterator(); it.hasNext() && LOADED.size() > limit; ) {
            Entry e = it.next();
            if (e != keep && e.holders == 0) {
                it.remove();
                e.owned.release();
                e.pages.release();
            }
        }
    }

    /** The cache keys of the pieces cached now, least recently used first; for tests. */
    static synchronized List<String> cachedKeys() {
        return new ArrayList<>(LOADED.keySet());
    }
}
