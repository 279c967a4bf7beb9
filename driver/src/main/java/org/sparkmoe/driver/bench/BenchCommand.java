package org.sparkmoe.driver.bench;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code sparkmoe bench}: benchmark programs (not tests); each prints ratios measured in one run. */
@Command(name = "bench", mixinStandardHelpOptions = true, description = "Benchmarks of the compute core.",
        subcommands = {MoeBenchCommand.class, EvalBenchCommand.class})
public final class BenchCommand implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing benchmark (moe, eval)");
    }
}
