package org.sparkmoe.driver.layerwise;

import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.driver.MemoryPlan;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.io.ModelConfig;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.util.Map;

/**
 * {@code --layerwise} and the flags that shape the layer-sequential pass; checked on the driver before Spark starts.
 * Without {@code --layerwise} or {@code --no-layerwise} the memory plan chooses ({@link #choose}).
 */
public final class LayerwiseOptions {
    @Option(names = "--layerwise", negatable = true, arity = "0..1", fallbackValue = "true", paramLabel = "true|false",
            description = "Run the model one decoder layer at a time over all chunks: the hidden states (float32) are "
                    + "a persisted RDD (memory and disk, serialised) and each layer is one map, so an executor maps "
                    + "one layer's weights, not the model's. Same bits as without it. Default: the memory plan "
                    + "chooses it when the whole model does not fit an executor (mapped weights, native memory and "
                    + "heap over what it has: this machine's memory in embedded mode, the container on YARN and "
                    + "Kubernetes, " + SparkLimits.MEMORY_KEY + " where set) and one layer does, with the fewest "
                    + "--expert-groups that fit, and says so; --no-layerwise (or --layerwise=false) runs the whole "
                    + "model.")
    Boolean layerwise;

    @Mixin
    LayerwisePassOptions pass;

    /**
     * The pass a job runs and its memory plan.
     *
     * @param pass   the layer-sequential pass, or null for the whole model
     * @param memory the plan for it
     * @param chosen the line saying what the memory plan chose and why (the driver prints it, also with --dry-run),
     *               or null when the flags chose
     */
    public record Choice(LayerwisePlan pass, MemoryPlan memory, String chosen) {
    }

    /**
     * The pass these flags ask for and its memory plan; without --layerwise or --no-layerwise, the memory plan's
     * choice: the whole model when {@code whole} fits an executor ({@link MemoryPlan#fits}, or its memory is not
     * known), else the layer-sequential pass with the fewest expert groups that fits
     * ({@link MemoryPlan#smallestLayerwise}), else the whole model (its weights paged in from the file as read).
     *
     * @param whole       the job's whole-model plan
     * @param tensorBytes the checkpoint's tensors' bytes by name ({@link MemoryPlan#tensorBytes})
     * @param keepsWhole  the flag that keeps this run whole-model (--adapter, --baseline), or null
     */
    public Choice choose(ModelConfig config, Configuration conf, MemoryPlan whole, Map<String, Long> tensorBytes,
                         int batchWindows, int window, String keepsWhole) {
        if (layerwise != null) {
            LayerwisePlan pass = plan(config, conf);
            return new Choice(pass, pass == null ? whole
                    : whole.layerwise(config, tensorBytes, batchWindows, window, pass.expertGroups()), null);
        }
        refuseStray("add --layerwise");
        if (whole.fits()) {
            return new Choice(null, whole, null);
        }
        String over = "memory plan: the whole model needs " + whole.needs() + ", over its "
                + MemoryPlan.size(whole.limits().memoryBytes());
        MemoryPlan layered = keepsWhole == null ? whole.smallestLayerwise(config, tensorBytes, batchWindows, window)
                : null;
        if (layered == null) {
            return new Choice(null, whole, over + "; " + (keepsWhole != null ? keepsWhole + " runs the whole model"
                    : "so does its largest piece, layer by layer: the whole model runs, its weights paged in from the "
                    + "files as read"));
        }
        int groups = layered.layerwise().expertGroups();
        return new Choice(new LayerwisePlan(groups, null, LayerwisePlan.DEFAULT_CHECKPOINT_EVERY), layered, over
                + "; layer by layer it needs " + MemoryPlan.size(layered.totalBytes()) + ": running --layerwise"
                + (groups > 1 ? " --expert-groups " + groups : "") + " (--no-layerwise runs the whole model)");
    }

    /** Whether the flags ask for the pass (--layerwise), not leaving it to the memory plan. */
    public boolean asked() {
        return Boolean.TRUE.equals(layerwise);
    }

    /**
     * The pass --layerwise asks for, or null for --no-layerwise; refuses a flag that needs another, in one line.
     * Called only when one of them was given.
     */
    private LayerwisePlan plan(ModelConfig config, Configuration conf) {
        if (!layerwise) {
            refuseStray("drop --no-layerwise");
            return null;
        }
        return pass.plan(config, conf);
    }

    /** Refuses a flag that shapes the pass when the flags do not ask for the pass ({@code fix}: what to do). */
    private void refuseStray(String fix) {
        String stray = pass.given();
        if (stray != null) {
            throw new IllegalArgumentException(stray + " shapes the layer-sequential pass: " + fix + ", or drop "
                    + stray);
        }
    }
}
