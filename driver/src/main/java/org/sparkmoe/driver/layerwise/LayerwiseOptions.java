package org.sparkmoe.driver.layerwise;

import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.io.ModelConfig;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code --layerwise} and the flags that shape the layer-sequential pass; checked on the driver before Spark starts. */
public final class LayerwiseOptions {
    @Option(names = "--layerwise", description = "Run the model one decoder layer at a time over all chunks: the "
            + "hidden states (float32) are a persisted RDD (memory and disk, serialised) and each layer is one map, "
            + "so an executor maps one layer's weights, not the model's. Same bits as without it.")
    boolean layerwise;

    @Mixin
    LayerwisePassOptions pass;

    /** The pass these flags ask for, or null without --layerwise; refuses a flag that needs another, in one line. */
    public LayerwisePlan plan(ModelConfig config, Configuration conf) {
        if (!layerwise) {
            String stray = pass.given();
            if (stray != null) {
                throw new IllegalArgumentException(stray + " shapes the layer-sequential pass: add --layerwise, or "
                        + "drop " + stray);
            }
            return null;
        }
        return pass.plan(config, conf);
    }
}
