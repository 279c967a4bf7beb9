package org.sparkmoe.driver.eval;

import org.sparkmoe.adapter.MutedExperts;
import org.sparkmoe.driver.PeftVersionOption;
import org.sparkmoe.driver.PlanChecks;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.text.TextSplit;

import java.io.Serializable;
import java.util.List;

/**
 * What an eval run computes, resolved and validated on the driver (the constructor checks every value).
 *
 * @param model        model folder URI
 * @param data         input text files (URIs), report names are their file names
 * @param split        docs/data.md split applied per file
 * @param window       S tokens per window (≥ 2)
 * @param topK         experts per token (≥ 1; 0 for a dense model, which has no experts)
 * @param batchWindows B windows per forward pass (≥ 1)
 * @param partitions   scoring partitions (≥ 1)
 * @param adapter      PEFT adapter folder URI applied (unmerged) to the model on every executor, or null
 * @param peftVersion  --peft-version: the PEFT release that saved a fused-expert adapter (its shape generation), or
 *                     null to go by adapter_config.json
 * @param device       where the executors' routed experts run
 * @param muted        the μMoE adapter's experts silenced (--mute-experts), {@link MutedExperts#NONE} for none
 */
public record EvalPlan(String model, List<String> data, TextSplit split, int window, int topK, int batchWindows,
                       int partitions, String adapter, String peftVersion, Device device, MutedExperts muted)
        implements Serializable {

    public EvalPlan {
        PlanChecks.requireModel(model);
        data = PlanChecks.requireData(data);
        PlanChecks.requireNonNull("--split", split);
        PlanChecks.requireAtLeast("--window", window, 2);
        PlanChecks.requireAtLeast("--top-k", topK, 0);
        PlanChecks.requireAtLeast("--batch-windows", batchWindows, 1);
        PlanChecks.requireAtLeast("--partitions", partitions, 1);
        PlanChecks.requireNonNull("--device", device);
        PeftVersionOption.check(peftVersion, adapter);
        PlanChecks.requireNonNull("--mute-experts", muted);
        if (!muted.isEmpty() && adapter == null) {
            throw new IllegalArgumentException("--mute-experts silences a μMoE adapter's experts; give the adapter "
                    + "with --adapter");
        }
    }

    /** A plan muting no expert. */
    public EvalPlan(String model, List<String> data, TextSplit split, int window, int topK, int batchWindows,
                    int partitions, String adapter, String peftVersion, Device device) {
        this(model, data, split, window, topK, batchWindows, partitions, adapter, peftVersion, device,
                MutedExperts.NONE);
    }

    /** A plan without --peft-version. */
    public EvalPlan(String model, List<String> data, TextSplit split, int window, int topK, int batchWindows,
                    int partitions, String adapter, Device device) {
        this(model, data, split, window, topK, batchWindows, partitions, adapter, null, device);
    }

    /** A plan for the plain model (no adapter) on the CPU. */
    public EvalPlan(String model, List<String> data, TextSplit split, int window, int topK, int batchWindows,
                    int partitions) {
        this(model, data, split, window, topK, batchWindows, partitions, null, null, Device.CPU);
    }

    public EvalPlan withPartitions(int n) {
        return new EvalPlan(model, data, split, window, topK, batchWindows, n, adapter, peftVersion, device, muted);
    }
}
