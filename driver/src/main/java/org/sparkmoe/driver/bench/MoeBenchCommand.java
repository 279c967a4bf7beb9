package org.sparkmoe.driver.bench;

import org.sparkmoe.bench.MoeBench;
import org.sparkmoe.driver.DeviceOptions;
import org.sparkmoe.kernels.Device;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code sparkmoe bench moe}: parses options and calls {@link MoeBench}; runs in the driver JVM, no Spark job. */
@Command(name = "moe", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Forward+backward of the MoE-LoRA experts (float32 compute; base weights fp32 or bf16): per-expert loop vs grouped GEMM vs naive,"
                + " GFLOP/s beside one dense GEMM with the same FLOPs, and the memory of low-rank experts.",
                "Cases: mixtral-like, fine-grained, small-batch, low-rank-100x."})
public final class MoeBenchCommand implements Callable<Integer> {
    @Option(names = "--cases", paramLabel = "A,B", description = "Comma-separated cases. Default: all.")
    String cases;

    @Option(names = "--repeats", paramLabel = "N", defaultValue = "5",
            description = "Timed runs per measurement after one warm-up; the median is reported. Default: ${DEFAULT-VALUE}.")
    int repeats;

    @Option(names = "--gemm-threads", paramLabel = "N",
            description = "N > 1: groups spread over N Java threads with one BLAS thread each (default: one per core;"
                    + " measured 1.04-1.76x faster than BLAS threads on fine-grained, equal on mixtral-like);"
                    + " 1: groups in order, BLAS threads = cores.")
    Integer gemmThreads;

    @Option(names = "--dtype", paramLabel = "fp32,bf16",
            description = "How the frozen base expert weights are stored: fp32, bf16 (one matrix per expert, widened"
                    + " per tile in the products, as a mapped bf16 checkpoint), or both comma-separated. Default: fp32.")
    String dtype;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the table as JSON.")
    Path json;

    @Mixin
    DeviceOptions device;

    @Override
    public Integer call() throws IOException {
        Device chosen = device.resolve();
        if (json != null && java.nio.file.Files.isDirectory(json)) {
            throw new IllegalArgumentException("--json " + json + " is a folder; bench moe writes one JSON file");
        }
        List<MoeBench.Case> selected = MoeBench.select(cases);
        List<MoeBench.Weights> weights = MoeBench.Weights.select(dtype);
        List<MoeBench.Result> results = new MoeBench(repeats,
                gemmThreads == null ? Runtime.getRuntime().availableProcessors() : gemmThreads, chosen, System.out)
                .run(selected, weights);
        if (json != null) {
            MoeBench.writeJson(results, json);
            System.out.println("wrote " + json);
        }
        return 0;
    }
}
