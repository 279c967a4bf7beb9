package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

/**
 * One kind of expert surgery, applied independently to each MoE layer and, within a layer, to {@link #parts()}
 * independent pieces (e.g. one per projection), so every (layer, part) can run as its own task: the new tensors under
 * their Hugging Face names, and the config.json the new checkpoint gets. Immutable and serialisable, so a Spark closure
 * can carry it to the executors.
 */
public interface LayerSurgery extends java.io.Serializable {
    /** Independent pieces of one layer's work; their results together make the layer's. */
    default int parts() {
        return 1;
    }

    /**
     * @param source   the original checkpoint
     * @param layer    decoder layer index
     * @param moeLayer its position among the MoE layers (index into per-layer settings and statistics)
     * @param part     0 ≤ part < {@link #parts()}
     */
    LayerResult applyPart(TensorSource source, int layer, int moeLayer, int part);

    /**
     * Whether the parts of a layer share work too costly to repeat in each (reduce --by weights: k-means over the
     * experts streamed from the checkpoint): the job then runs {@link #shared} once per MoE layer, in a task of its
     * own, and hands every part its layer's result through {@link #withShared}.
     */
    default boolean sharesWork() {
        return false;
    }

    /** The work every part of MoE layer {@code moeLayer} shares: small, it travels through the driver. */
    default java.io.Serializable shared(TensorSource source, int layer, int moeLayer) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " shares no work between its parts");
    }

    /** This surgery with each MoE layer's {@link #shared} result (indexed by MoE layer), which its parts then use. */
    default LayerSurgery withShared(java.io.Serializable[] perMoeLayer) {
        return this;
    }

    /** Every part of one layer, merged in part order (what the parallel job assembles too). */
    default LayerResult apply(TensorSource source, int layer, int moeLayer) {
        LayerSurgery surgery = this;
        if (sharesWork()) {
            java.io.Serializable[] shared = new java.io.Serializable[moeLayer + 1];
            shared[moeLayer] = shared(source, layer, moeLayer);
            surgery = withShared(shared);
        }
        java.util.List<LayerResult> results = new java.util.ArrayList<>();
        for (int part = 0; part < parts(); part++) {
            results.add(surgery.applyPart(source, layer, moeLayer, part));
        }
        return LayerResult.merge(results);
    }

    /**
     * New tensors of decoder layer {@code layer} that are original tensors under another name (new name → original
     * name, e.g. a kept expert renumbered): the writer copies them from the checkpoint as stored, no task makes them.
     */
    default java.util.Map<String, String> renamed(int layer, int moeLayer) {
        return java.util.Map.of();
    }

    /**
     * Named lists of original expert indices for MoE layer {@code moeLayer}'s entry in surgery.json (prune: the
     * experts its router can choose, "kept", and those it holds but never selects, "masked"); empty for most surgeries.
     */
    default java.util.Map<String, int[]> expertLists(int moeLayer) {
        return java.util.Map.of();
    }

    /**
     * Native bytes one part's task holds at most beside the memory-mapped checkpoint: the new tensors it makes
     * (float32 until staged) and its scratch — what the surgery's memory plan counts per task slot.
     */
    long partBytes(ModelConfig model);

    /** The new config.json, from the original. */
    ObjectNode config(ModelConfig original);
}
