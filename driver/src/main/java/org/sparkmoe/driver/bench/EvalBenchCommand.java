package org.sparkmoe.driver.bench;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.bench.DenseReference;
import org.sparkmoe.driver.eval.EvalCommand;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Unmatched;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/**
 * {@code sparkmoe bench eval}: runs {@code eval} with the given arguments, then one dense float32 GEMM of a forward
 * pass's rows and hidden size on every core of this machine, and prints the eval's tokens/s as a share of the FLOP
 * bound (dense GFLOP/s ÷ 2 × active parameters per token). Meant for the embedded master, where the executors
 * share this machine's cores; runs in the driver JVM.
 */
@Command(name = "eval", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Runs eval with the arguments given (e.g. --model M --data F), then one dense float32 GEMM of a "
                + "forward pass's rows and hidden size (at most 8192 columns) on every core, and prints eval's "
                + "tokens/s against the FLOP bound: dense GFLOP/s ÷ (2 × active parameters per token: every matrix "
                + "once, the routed experts' K of E, the embedding lookup not at all). For the embedded master, whose "
                + "executors run on this machine."})
public final class EvalBenchCommand implements Callable<Integer> {
    /** The dense GEMM's columns at most: [hidden, 8192] float32 is 128 MiB at hidden 4096. */
    static final int DENSE_COLUMNS = 8192;

    @Option(names = "--repeats", paramLabel = "N", defaultValue = "5",
            description = "Timed runs of the dense GEMM after one warm-up; the median is reported. "
                    + "Default: ${DEFAULT-VALUE}.")
    int repeats;

    @Unmatched
    List<String> evalArgs = new ArrayList<>();

    @Override
    public Integer call() {
        EvalCommand eval = new EvalCommand();
        CommandLine line = new CommandLine(eval);
        int code = line.execute(evalArgs.toArray(String[]::new));
        EvalCommand.Measured m = eval.measured();
        if (code != 0 || m == null) {
            return code != 0 ? code : 2;
        }
        Configuration conf = new Configuration();
        ModelConfig config = ModelFolder.readConfig(new Path(m.model()), conf);
        double active;
        try (Checkpoint checkpoint = Checkpoint.open(new Path(m.model()), conf)) {
            active = ActiveParameters.perToken(checkpoint, config);
        }
        double flopsPerToken = 2 * active;
        // the yardstick: [forward tokens, hidden] · [hidden, C], C = a forward pass's FLOPs in columns, at most
        // DENSE_COLUMNS (a Mixtral-shaped pass would need a 2 GB right-hand side; the rate is what is compared)
        double gemmFlops = 2.0 * m.forwardTokens() * config.hidden_size
                * Math.min(DENSE_COLUMNS, Math.ceil(active / config.hidden_size));
        double ms = DenseReference.medianMs(m.forwardTokens(), config.hidden_size, gemmFlops, repeats);
        double gflops = gemmFlops / ms / 1e6;
        double bound = gflops * 1e9 / flopsPerToken;
        double rate = m.tokens() / m.seconds();
        System.out.printf(Locale.ROOT, "bench eval: %d scored tokens in %.1f s = %.1f tokens/s (the whole job)%n",
                m.tokens(), m.seconds(), rate);
        System.out.printf(Locale.ROOT, "bench eval: %.4g active parameters per token, %.4g GFLOP per token%n",
                active, flopsPerToken / 1e9);
        System.out.printf(Locale.ROOT, "bench eval: dense float32 GEMM [%d, %d] x [%d, %d] on %d cores: %.1f GFLOP/s "
                        + "(median of %d) -> FLOP bound %.1f tokens/s%n", m.forwardTokens(), config.hidden_size,
                config.hidden_size, Math.round(gemmFlops / (2.0 * m.forwardTokens() * config.hidden_size)),
                Runtime.getRuntime().availableProcessors(), gflops, repeats, bound);
        System.out.printf(Locale.ROOT, "bench eval: eval at %.1f%% of the FLOP bound%n", 100 * rate / bound);
        return 0;
    }
}
