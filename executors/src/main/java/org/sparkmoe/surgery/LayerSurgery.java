package org.sparkmoe.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;

/**
 * One kind of expert surgery, applied independently to each MoE layer (so layers run as separate tasks): the
 * layer's new tensors under their Hugging Face names, and the config.json the new checkpoint gets. Immutable and
 * serialisable, so a Spark closure can carry it to the executors.
 */
public interface LayerSurgery extends java.io.Serializable {
    /**
     * @param source   the original checkpoint
     * @param layer    decoder layer index
     * @param moeLayer its position among the MoE layers (index into per-layer settings and statistics)
     */
    LayerResult apply(TensorSource source, int layer, int moeLayer);

    /** The new config.json, from the original. */
    ObjectNode config(ModelConfig original);
}
