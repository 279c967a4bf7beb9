package org.sparkmoe.driver;

import picocli.CommandLine.Option;

/** {@code --dry-run}, and the printing and checking of a job's {@link MemoryPlan} before Spark starts. */
public final class DryRunOption {
    @Option(names = "--dry-run", description = "Print the memory plan (per executor JVM: mapped weights, native and "
            + "anonymous memory; train: what a round broadcasts and returns), check it, and exit without starting "
            + "Spark. The plan is printed at the start of every run too, and a plan that cannot fit is refused.")
    public boolean dryRun;

    /** Prints {@code plan} to stderr and refuses it if it cannot fit; true when the command stops here. */
    public boolean show(MemoryPlan plan) {
        return show(plan, null);
    }

    /** As {@link #show(MemoryPlan)}, with the GPU's part after it ({@code --device cuda}; null: none). */
    public boolean show(MemoryPlan plan, GpuMemoryPlan gpu) {
        System.err.print(plan.describe());
        if (gpu != null) {
            System.err.print(gpu.describe());
        }
        plan.check();
        return dryRun;
    }
}
