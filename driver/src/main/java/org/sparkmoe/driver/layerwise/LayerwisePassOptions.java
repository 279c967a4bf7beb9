package org.sparkmoe.driver.layerwise;

import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.io.ModelConfig;
import picocli.CommandLine.Option;

/**
 * The flags that shape a layer-sequential pass: eval's and calibrate's with --layerwise ({@link LayerwiseOptions}),
 * and surgery lowrank's distillation, which always runs on the pass. Checked on the driver before Spark starts.
 */
public final class LayerwisePassOptions {
    @Option(names = "--expert-groups", paramLabel = "G", description = "Layer-sequential pass: run each MoE layer's "
            + "experts as G tasks per chunk partition (G contiguous ranges of experts), combined per chunk in expert "
            + "order (same bits for every G). Default: 1, or, for eval and calibrate, the memory plan's choice when it "
            + "chooses the pass.")
    Integer expertGroups;

    @Option(names = "--checkpoint-dir", paramLabel = "DIR", description = "Layer-sequential pass: reliable storage "
            + "(HDFS, a shared file system) the hidden-state RDD is checkpointed to every --checkpoint-every layers, "
            + "so a lost executor recomputes from the last checkpointed layer, not from the embedding.")
    String checkpointDir;

    @Option(names = "--checkpoint-every", paramLabel = "K", description = "With --checkpoint-dir: checkpoint after "
            + "every K-th layer. Default: " + LayerwisePlan.DEFAULT_CHECKPOINT_EVERY + ".")
    Integer checkpointEvery;

    /** The first of these flags given, or null when none is. */
    String given() {
        return expertGroups != null ? "--expert-groups" : checkpointDir != null ? "--checkpoint-dir"
                : checkpointEvery != null ? "--checkpoint-every" : null;
    }

    /** The pass these flags ask for; refuses a flag that needs another, or a G the model cannot take, in one line. */
    public LayerwisePlan plan(ModelConfig config, Configuration conf) {
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
