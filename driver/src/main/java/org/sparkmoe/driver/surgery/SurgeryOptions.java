package org.sparkmoe.driver.surgery;

import org.sparkmoe.driver.CheckpointOutputOptions;
import org.sparkmoe.driver.DryRunOption;
import org.sparkmoe.driver.SparkOptions;
import org.sparkmoe.model.CheckpointOptions;
import org.sparkmoe.driver.ModelOption;
import org.sparkmoe.io.ExpertLayout;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** Options every surgery subcommand shares. */
public final class SurgeryOptions {
    @Mixin
    ModelOption model;

    @Option(names = "--out", required = true, paramLabel = "DIR",
            description = "Output checkpoint folder; must not exist yet. It appears only once complete.")
    String out;

    @Option(names = "--stats", paramLabel = "FILE",
            description = "Written by 'sparkmoe calibrate' on this model: router-stats.json (topk, reduce, lowrank), "
                    + "expert-scores.json (prune).")
    String stats;

    @Option(names = "--layout", paramLabel = "per-expert|fused",
            description = "How the output stores its experts: one tensor per expert, or transformers 5's fused "
                    + "mlp.experts.gate_up_proj / down_proj. Default: the input's layout.")
    String layout;

    @Mixin
    CheckpointOutputOptions output = new CheckpointOutputOptions();

    @Mixin
    SparkOptions spark;

    @Mixin
    DryRunOption dryRun = new DryRunOption();

    /** How the output checkpoint is written: --layout (null: the input's), --max-shard-size, --dtype. */
    CheckpointOptions checkpoint() {
        return output.with(layout == null ? null : ExpertLayout.parse(layout));
    }

    /**
     * The options of a surgery run from code (a pipeline) rather than the command line.
     *
     * @param stats      router-stats.json, or null
     * @param partitions Spark partitions of the surgery tasks
     */
    public static SurgeryOptions of(String model, String out, String stats, int partitions) {
        SurgeryOptions options = new SurgeryOptions();
        options.model = new ModelOption();
        options.model.dir = model;
        options.out = out;
        options.stats = stats;
        options.spark = new SparkOptions();
        options.spark.partitions = partitions;
        return options;
    }
}
