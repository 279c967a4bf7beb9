package org.sparkmoe.driver.layerwise;

import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.io.ModelConfig;
import picocli.CommandLine.Option;

/** {@code --layerwise} and the flags that shape the layer-sequential pass; checked on the driver before Spark starts. */
public final class LayerwiseOptions {
    @Option(names = "--layerwise", description = "Run the model one decoder layer at a time over all chunks: the "
            + "hidden states (float32) are a persisted RDD (memory and disk, serialised) and each layer is one map, "
            + "so an executor maps one layer's weights, not the model's. Same bits as without it.")
    boolean layerwise;

    @Option(names = "--expert-groups", paramLabel = "G", description = "With --layerwise: run each MoE layer's experts "
            + "as G tasks per chunk partition (G contiguous ranges of experts), combined per chunk in expert order "
            + "(same bits for every G). Default: 1.")
    Integer expertGroups;

    @Option(names = "--checkpoint-dir", paramLabel = "DIR", description = "With --layerwise: reliable storage (HDFS, "
            + "a shared file system) the hidden-state RDD is checkpointed to every --checkpoint-every layers, so a "
            + "lost executor recomputes from the last checkpointed layer, not from the embedding.")
    String checkpointDir;

    @Option(names = "--checkpoint-every", paramLabel = "K", description = "With --checkpoint-dir: checkpoint after "
            + "every K-th layer. Default: " + LayerwisePlan.DEFAULT_CHECKPOINT_EVERY + ".")
    Integer checkpointEvery;

    /** The pass these flags ask for, or null without --layerwise; refuses a flag that needs another, in one line. */
    public LayerwisePlan plan(ModelConfig config, Configuration conf) {
        if (!layerwise) {
            String stray = expertGroups != null ? "--expert-groups" : checkpointDir != null ? "--checkpoint-dir"
                    : checkpointEvery != null ? "--checkpoint-every" : null;
            if (stray != null) {
                throw new IllegalArgumentException(stray + " shapes the layer-sequential pass: add --layerwise, or "
                        + "drop " + stray);
            }
            return null;
        }
        if (checkpointEvery != null && checkpointDir == null) {
            throw new IllegalArgumentException("--checkpoint-every needs --checkpoint-dir (where the checkpoints go)");
        }
        int groups = expertGroups == null ? 1 : expertGroups;
        if (groups > 1 && config.num_experts == 0) {
            throw new IllegalArgumentException("--expert-groups " + groups + ": the model is dense (no experts to "
                    + "group); drop --expert-groups");
        }
        if (groups > 1 && config.hasLowRankExperts()) {
            throw new IllegalArgumentException("--expert-groups " + groups + ": a low-rank model's experts share one "
                    + "base FFN and are not split into groups; drop --expert-groups");
        }
        if (groups > 1 && groups > config.num_experts) {
            throw new IllegalArgumentException("--expert-groups must be at most the model's " + config.num_experts
                    + " experts, got " + groups);
        }
        return new LayerwisePlan(groups, checkpointDir == null ? null : Paths.qualify(checkpointDir, conf),
                checkpointEvery == null ? LayerwisePlan.DEFAULT_CHECKPOINT_EVERY : checkpointEvery);
    }
}
