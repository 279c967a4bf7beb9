package org.sparkmoe.bench;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.LoopGroupedGemm;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.routing.RoutingPlan;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The grouped GEMM alone, one projection [N, in] → [N, out] over E experts: forward + backwardInput +
 * backwardWeight, timed for the per-expert loop, ND4J sequential over groups (parallelism from BLAS threads) and
 * ND4J parallel over groups on {@code threads} Java threads, beside one dense GEMM with the same FLOPs. The BLAS
 * thread count is fixed when the library loads ({@code OPENBLAS_NUM_THREADS}, {@code OMP_NUM_THREADS}): compare
 * modes across separate JVM runs, each of which prints the count it ran with.
 */
public final class GroupedGemmBench {

    /** @param rows N = T·K plan rows */
    public record Case(String name, int rows, int in, int out, int experts) {
    }

    public static List<Case> cases() {
        return List.of(new Case("fine-grained", 2048 * 6, 512, 256, 64),
                new Case("mixtral-like", 2048 * 2, 512, 1024, 8));
    }

    public static void run(PrintStream out, int threads, int repeats) {
        out.printf(Locale.ROOT, "grouped gemm, fwd + bwd-input + bwd-weight, float32; BLAS threads %d"
                        + " (OPENBLAS_NUM_THREADS=%s, OMP_NUM_THREADS=%s); parallel mode on %d Java threads%n",
                Nd4j.factory().blas().getMaxThreads(), System.getenv("OPENBLAS_NUM_THREADS"),
                System.getenv("OMP_NUM_THREADS"), threads);
        out.printf(Locale.ROOT, "%-14s %10s %10s %10s %10s | %8s %8s %8s %8s%n", "case", "loop ms", "seq ms",
                "par ms", "dense ms", "seq GF/s", "par GF/s", "dns GF/s", "par/seq");
        for (Case c : cases()) {
            RoutingPlan plan = SyntheticRouting.routes(c.rows() / (c.experts() == 8 ? 2 : 6), c.experts(),
                    c.experts() == 8 ? 2 : 6, 42).plan;
            int[] offsets = plan.offsets;
            INDArray x = Nd4j.rand(DataType.FLOAT, c.rows(), c.in());                     // [N, in]
            INDArray w = Nd4j.rand(DataType.FLOAT, c.experts(), c.out(), c.in());          // [E, out, in]
            INDArray dy = Nd4j.rand(DataType.FLOAT, c.rows(), c.out());                   // [N, out]
            INDArray y = Nd4j.create(DataType.FLOAT, c.rows(), c.out());
            INDArray dx = Nd4j.create(DataType.FLOAT, c.rows(), c.in());
            INDArray dw = Nd4j.create(DataType.FLOAT, c.experts(), c.out(), c.in());
            double flops = 3 * 2.0 * c.rows() * c.in() * c.out();
            List<Double> ms = new ArrayList<>();
            for (GroupedGemm g : new GroupedGemm[] {new LoopGroupedGemm(), new Nd4jGroupedGemm(),
                    new Nd4jGroupedGemm(threads)}) {
                ms.add(Stopwatch.medianMs(2, repeats, () -> {
                    g.forward(x, w, offsets, y);
                    g.backwardInput(dy, w, offsets, dx, false);
                    g.backwardWeight(dy, x, offsets, dw, false);
                }));
            }
            double dense = DenseReference.medianMs(c.rows(), c.in(), flops, repeats);
            out.printf(Locale.ROOT, "%-14s %10.2f %10.2f %10.2f %10.2f | %8.1f %8.1f %8.1f %8.2f%n", c.name(),
                    ms.get(0), ms.get(1), ms.get(2), dense, flops / ms.get(1) / 1e6, flops / ms.get(2) / 1e6,
                    flops / dense / 1e6, ms.get(1) / ms.get(2));
        }
    }

    public static void main(String[] args) {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : 2;
        int repeats = args.length > 1 ? Integer.parseInt(args[1]) : 7;
        run(System.out, threads, repeats);
    }
}
