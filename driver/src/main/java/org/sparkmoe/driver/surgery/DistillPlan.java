package org.sparkmoe.driver.surgery;

import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.sparkmoe.surgery.DistillOptions;
import org.sparkmoe.text.TextSplit;

import org.sparkmoe.kernels.Device;

import java.io.Serializable;
import java.util.List;

/**
 * The calibration text and settings of {@code surgery lowrank --distill-steps}, resolved on the driver.
 *
 * @param data          text file URIs
 * @param split         the docs/data.md split taken of every file
 * @param window        S tokens per window
 * @param tokensPerFile the first ⌊N/S⌋ windows of each file's split are used
 * @param batchWindows  windows per chunk of the pass (the original model runs them together)
 * @param options       the optimisation
 * @param device        where the executors' expert grouped GEMMs of the original model run
 * @param pass          the layer-sequential pass that runs the original model over the windows
 */
record DistillPlan(List<String> data, TextSplit split, int window, int tokensPerFile, int batchWindows,
                   DistillOptions options, Device device, LayerwisePlan pass) implements Serializable {
    /** Windows used of a file's split of {@code tokens} tokens. */
    int windowsOf(int tokens) {
        return Math.min(tokens, tokensPerFile) / window;
    }

    /** T, the tokens a layer trains on, at most: every file's split holding --distill-tokens. */
    long maxTokens() {
        return (long) data.size() * windowsOf(tokensPerFile) * window;
    }
}
