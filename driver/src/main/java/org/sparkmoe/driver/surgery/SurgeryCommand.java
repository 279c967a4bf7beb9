package org.sparkmoe.driver.surgery;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code sparkmoe surgery}: the parent of the expert-surgery subcommands. */
@Command(name = "surgery", mixinStandardHelpOptions = true,
        description = {"Reshape an MoE model's experts and write a new Hugging Face checkpoint folder. Each MoE layer is "
                + "a Spark task; the driver only collects and writes."},
        subcommands = {TopKCommand.class, MergeDenseCommand.class, ReduceCommand.class, PruneCommand.class,
                LowRankCommand.class})
public final class SurgeryCommand implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand (topk, merge-dense, reduce, prune, lowrank)");
    }
}
