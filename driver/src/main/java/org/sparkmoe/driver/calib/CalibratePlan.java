package org.sparkmoe.driver.calib;

import org.sparkmoe.text.TextSplit;

import java.io.Serializable;
import java.util.List;

/**
 * What a calibration run computes, resolved and validated on the driver.
 *
 * @param model            model folder URI
 * @param data             input text files (URIs); reports name them by file name
 * @param split            docs/data.md split applied per file
 * @param window           S tokens per window
 * @param maxTokensPerFile use at most the first ⌊N/S⌋·S tokens of each file's split; 0 for all of it
 * @param topK             experts per token (the model's)
 * @param batchWindows     windows per forward pass
 * @param partitions       partitions of the forward stage
 * @param allExperts       activation statistics over every token for every expert
 * @param routerData       URI of the router-data folder to export to, or null
 */
public record CalibratePlan(String model, List<String> data, TextSplit split, int window, int maxTokensPerFile,
                            int topK, int batchWindows, int partitions, boolean allExperts, String routerData)
        implements Serializable {
    public CalibratePlan withPartitions(int n) {
        return new CalibratePlan(model, data, split, window, maxTokensPerFile, topK, batchWindows, n, allExperts,
                routerData);
    }

    /** Windows of a split holding {@code tokens} tokens: ⌊min(N, max)/S⌋. */
    public int windowsOf(int tokens) {
        int usable = maxTokensPerFile > 0 ? Math.min(tokens, maxTokensPerFile) : tokens;
        return usable / window;
    }
}
