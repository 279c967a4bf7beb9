package org.sparkmoe.driver.layerwise;

import org.sparkmoe.driver.PlanChecks;

import java.io.Serializable;

/**
 * How a layer-sequential pass runs (validated in the constructor): the hidden states of the token chunks are a
 * persisted RDD, and each decoder layer is one narrow map over it, so an executor holds one layer's weights at a time.
 *
 * @param expertGroups    G: an MoE layer's experts run as G tasks per chunk partition (contiguous expert ranges),
 *                        their rows combined per chunk in expert order; 1 runs the layer as one map
 * @param checkpointDir   reliable storage (a Hadoop FS URI) the hidden-state RDD is checkpointed to, or null
 * @param checkpointEvery K: with a checkpoint folder, the RDD after every K-th layer is checkpointed (lineage cut)
 */
public record LayerwisePlan(int expertGroups, String checkpointDir, int checkpointEvery) implements Serializable {
    /** --checkpoint-every's default. */
    public static final int DEFAULT_CHECKPOINT_EVERY = 4;

    public LayerwisePlan {
        PlanChecks.requireAtLeast("--expert-groups", expertGroups, 1);
        PlanChecks.requireAtLeast("--checkpoint-every", checkpointEvery, 1);
    }

    /** Whether the RDD holding layer {@code l}'s output (0-based) is checkpointed. */
    public boolean checkpointsAfter(int l) {
        return checkpointDir != null && (l + 1) % checkpointEvery == 0;
    }
}
