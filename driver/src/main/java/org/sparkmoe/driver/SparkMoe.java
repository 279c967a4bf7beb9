package org.sparkmoe.driver;

import org.sparkmoe.driver.bench.BenchCommand;
import org.sparkmoe.driver.calib.CalibrateCommand;
import org.sparkmoe.driver.demo.DemoCommand;
import org.sparkmoe.driver.eval.EvalCommand;
import org.sparkmoe.driver.logits.LogitsCommand;
import org.sparkmoe.driver.train.TrainCommand;
import org.sparkmoe.driver.merge.MergeCommand;
import org.sparkmoe.driver.router.RetrainRouterCommand;
import org.sparkmoe.driver.surgery.SurgeryCommand;
import org.sparkmoe.driver.synth.SynthCommand;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.PrintWriter;

/** The {@code sparkmoe} command line: parses options, runs one job, turns exceptions into exit codes. */
@Command(name = "sparkmoe", mixinStandardHelpOptions = true, version = "SparkMoE 0.1.0",
        description = "Fine-tune, measure and reshape Mixture-of-Experts language models on Spark.",
        subcommands = {DemoCommand.class, EvalCommand.class, TrainCommand.class, CalibrateCommand.class,
                RetrainRouterCommand.class,
                LogitsCommand.class, MergeCommand.class, SurgeryCommand.class, SynthCommand.class, BenchCommand.class, CommandLine.HelpCommand.class})
public final class SparkMoe implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing command");
    }

    /**
     * Exits with {@link #execute}'s code, except after a success in cluster deploy mode: there main runs inside
     * Spark's YARN ApplicationMaster, which reports the application SUCCEEDED when main returns, and FAILED ("Shutdown
     * hook called before final status was reported") when it calls System.exit, even with 0.
     */
    public static void main(String[] args) {
        int code = execute(new PrintWriter(System.err, true), args);
        if (code != 0 || !"cluster".equals(System.getProperty("spark.submit.deployMode"))) {
            System.exit(code);
        }
    }

    /**
     * Runs the command line and returns its exit code: 0 success, 1 failed job or bad input, 2 bad flags.
     * Errors go to {@code err} as one line naming the culprit.
     */
    public static int execute(PrintWriter err, String... args) {
        CommandLine cli = new CommandLine(new SparkMoe());
        cli.setErr(err);
        // picocli hands only Exceptions to the handler below; an Error (an OutOfMemoryError, Hadoop's FSError for a
        // full local disk) would escape with its stack trace, so it goes the same way, as the cause of an
        // ExecutionException of the command that was running
        cli.setExecutionStrategy(parsed -> {
            try {
                return new CommandLine.RunLast().execute(parsed);
            } catch (Error e) {
                CommandLine.ParseResult last = parsed;
                while (last.subcommand() != null) {
                    last = last.subcommand();
                }
                throw new CommandLine.ExecutionException(last.commandSpec().commandLine(), String.valueOf(e), e);
            }
        });
        cli.setExecutionExceptionHandler((e, cmd, parsed) -> {
            PrintWriter out = cmd.getErr();
            Throwable failure = e instanceof CommandLine.ExecutionException && e.getCause() instanceof Error error
                    ? error : e;
            out.println(cmd.getCommandName() + ": error: " + UserErrors.message(failure));
            if (UserErrors.isUnexpected(failure)) {
                failure.printStackTrace(out);
            }
            out.flush();
            return 1;
        });
        cli.setParameterExceptionHandler((e, parsed) -> {
            PrintWriter out = e.getCommandLine().getErr();
            out.println(e.getCommandLine().getCommandName() + ": " + e.getMessage()
                    + " (see '" + e.getCommandLine().getCommandSpec().qualifiedName() + " --help')");
            out.flush();
            return 2;
        });
        return cli.execute(args);
    }
}
