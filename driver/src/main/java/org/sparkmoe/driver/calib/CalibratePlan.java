package org.sparkmoe.driver.calib;

import org.sparkmoe.driver.PlanChecks;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.text.TextSplit;

import java.io.Serializable;
import java.util.List;

/**
 * What a calibration run computes, resolved and validated on the driver (the constructor checks every value).
 *
 * @param model            model folder URI
 * @param data             input text files (URIs); reports name them by file name
 * @param split            docs/data.md split applied per file
 * @param window           S tokens per window (≥ 2)
 * @param maxTokensPerFile use at most the first ⌊N/S⌋·S tokens of each file's split; 0 for all of it, else ≥ S
 * @param topK             experts per token (the model's, ≥ 1)
 * @param batchWindows     windows per forward pass (≥ 1)
 * @param partitions       partitions of the forward stage (≥ 1)
 * @param allExperts       activation statistics over every token for every expert
 * @param routerData       URI of the router-data folder to export to, or null
 * @param device           where the executors' routed experts run
 * @param adapter          adapter folder URI (PEFT LoRA or μMoE) applied unmerged on every executor, or null
 */
public record CalibratePlan(String model, List<String> data, TextSplit split, int window, int maxTokensPerFile,
                            int topK, int batchWindows, int partitions, boolean allExperts, String routerData,
                            Device device, String adapter) implements Serializable {

    public CalibratePlan {
        PlanChecks.requireModel(model);
        data = PlanChecks.requireData(data);
        PlanChecks.requireNonNull("--split", split);
        PlanChecks.requireAtLeast("--window", window, 2);
        if (maxTokensPerFile != 0 && maxTokensPerFile < window) {
            throw new IllegalArgumentException("--max-tokens-per-file must be ≥ --window (" + window + "), got "
                    + maxTokensPerFile);
        }
        PlanChecks.requireAtLeast("--top-k", topK, 1);
        PlanChecks.requireAtLeast("--batch-windows", batchWindows, 1);
        PlanChecks.requireAtLeast("--partitions", partitions, 1);
        PlanChecks.requireNonNull("--device", device);
    }

    /** A plan of the plain model. */
    public CalibratePlan(String model, List<String> data, TextSplit split, int window, int maxTokensPerFile,
                         int topK, int batchWindows, int partitions, boolean allExperts, String routerData,
                         Device device) {
        this(model, data, split, window, maxTokensPerFile, topK, batchWindows, partitions, allExperts, routerData,
                device, null);
    }

    /** A plan of the plain model on the CPU. */
    public CalibratePlan(String model, List<String> data, TextSplit split, int window, int maxTokensPerFile,
                         int topK, int batchWindows, int partitions, boolean allExperts, String routerData) {
        this(model, data, split, window, maxTokensPerFile, topK, batchWindows, partitions, allExperts, routerData,
                Device.CPU);
    }

    public CalibratePlan withPartitions(int n) {
        return new CalibratePlan(model, data, split, window, maxTokensPerFile, topK, batchWindows, n, allExperts,
                routerData, device, adapter);
    }

    /** Windows of a split holding {@code tokens} tokens: ⌊min(N, max)/S⌋. */
    public int windowsOf(int tokens) {
        int usable = maxTokensPerFile > 0 ? Math.min(tokens, maxTokensPerFile) : tokens;
        return usable / window;
    }
}
