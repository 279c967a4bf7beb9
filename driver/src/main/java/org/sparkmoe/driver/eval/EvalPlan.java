package org.sparkmoe.driver.eval;

import org.sparkmoe.text.TextSplit;

import java.io.Serializable;
import java.util.List;

/**
 * What an eval run computes, resolved and validated on the driver.
 *
 * @param model        model folder URI
 * @param data         input text files (URIs), report names are their file names
 * @param split        docs/data.md split applied per file
 * @param window       S tokens per window
 * @param topK         experts per token
 * @param batchWindows B windows per forward pass
 * @param partitions   scoring partitions
 * @param adapter      PEFT adapter folder URI merged into the model on every executor, or null
 */
public record EvalPlan(String model, List<String> data, TextSplit split, int window, int topK, int batchWindows,
                       int partitions, String adapter) implements Serializable {

    /** A plan for the plain model (no adapter). */
    public EvalPlan(String model, List<String> data, TextSplit split, int window, int topK, int batchWindows,
                    int partitions) {
        this(model, data, split, window, topK, batchWindows, partitions, null);
    }
}
