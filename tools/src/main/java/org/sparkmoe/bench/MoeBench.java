package org.sparkmoe.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.CudaGroupedGemm;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.LoopGroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.kernels.Workers;
import org.sparkmoe.kernels.NaiveGroupedGemm;
import org.sparkmoe.kernels.StepWorkspace;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.experts.ExpertFfn;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LoraExperts;
import org.sparkmoe.experts.LowRankExperts;
import org.sparkmoe.experts.LowRankFactorised;
import org.sparkmoe.experts.LowRankNaive;
import org.sparkmoe.experts.LowRankWeights;
import org.sparkmoe.routing.Routes;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code sparkmoe bench moe}: forward + backward of the MoE-LoRA expert computation (float32), timed with the
 * per-expert loop ({@link LoopGroupedGemm}), the grouped GEMM ({@link Nd4jGroupedGemm}) and, where it fits, the
 * naive dense one ({@link NaiveGroupedGemm}) behind the same {@link FullExperts}; beside them, one dense GEMM
 * with the same FLOPs, measured in the same run. The low-rank case compares the factorised low-rank experts (loop and
 * grouped GEMM) with the naive per-token weights, in time and forward bytes.
 *
 * <p>FLOPs counted (the useful work, routed rows only; N = T·K): base projections forward and input-gradient
 * (frozen weights: no weight gradient), 3 · 2 · 2·N·D·I; LoRA on all three projections, forward (shrink, expand)
 * and backward (dB, d-shrunk, dA, dx), 3 · 2 · 2·N·R·(D+I). The low-rank case counts the base over T tokens
 * and the LoRA terms over T·K rows. Element-wise work (SwiGLU, scaling) is not counted but is timed.
 *
 * <p>Columns beyond the issue's: {@code gemm%}, the share of the grouped pass's wall time spent inside
 * {@link GroupedGemm} calls, and {@code gemm GF/s}, the useful FLOPs over that time alone.
 *
 * <p>Weights: {@link Weights#FP32} keeps the frozen base expert weights in float32; {@link Weights#BF16} stores them
 * as bf16, one matrix per expert as a mapped checkpoint holds them, widened per tile inside the products
 * ({@link WeightStack}); activations, LoRA factors and gradients stay float32 either way. The low-rank experts load
 * their base widened to float32 (no bf16 path), so their bf16 row is not measured.
 */
public final class MoeBench {

    /** One benchmark case. {@code lowRank}: E LoRA experts over one base FFN (low-rank experts); else E base experts with LoRA. */
    public record Case(String name, int tokens, int hidden, int intermediate, int experts, int topK, int rank,
                       boolean lowRank) {
        long rows() {
            return (long) tokens * topK;
        }

        double usefulFlops() {
            long baseRows = lowRank ? tokens : rows();
            double base = 3 * 2 * 2.0 * baseRows * hidden * intermediate;
            double lora = 3 * 2 * 2.0 * rows() * rank * (hidden + intermediate);
            return base + lora;
        }
    }

    /** The type the frozen base expert weights are stored in. */
    public enum Weights {
        FP32(DataType.FLOAT), BF16(DataType.BFLOAT16);

        final DataType stored;

        Weights(DataType stored) {
            this.stored = stored;
        }

        /** {@code fp32} or {@code bf16}. */
        public String label() {
            return name().toLowerCase(Locale.ROOT);
        }

        /** A comma-separated list of {@code fp32}, {@code bf16}; blank: fp32 alone. */
        public static List<Weights> select(String names) {
            if (names == null || names.isBlank()) {
                return List.of(FP32);
            }
            List<Weights> chosen = new ArrayList<>();
            for (String n : names.split(",")) {
                String name = n.trim();
                chosen.add(java.util.Arrays.stream(values()).filter(w -> w.label().equals(name)).findFirst()
                        .orElseThrow(() -> new IllegalArgumentException("unknown --dtype '" + name
                                + "', expected fp32 or bf16")));
            }
            return chosen;
        }
    }

    /** A measured row of the table; null fields were not measured. */
    public record Result(String name, String weights, Double loopMs, Double groupedMs, Double naiveMs, Double speedup,
                         Double groupedGflops, Double denseGflops, Long naiveBytes, Long factorisedBytes,
                         Double gemmShare, String note) {
    }

    public static final List<Case> CASES = List.of(
            new Case("mixtral-like", 2048, 512, 1024, 8, 2, 16, false),
            new Case("fine-grained", 2048, 512, 256, 64, 6, 16, false),
            new Case("small-batch", 256, 512, 256, 64, 6, 16, false),
            new Case("low-rank-100x", 1024, 512, 2048, 128, 2, 4, true));

    /** The naive dense grouped GEMM runs only when its FLOPs (E× the useful ones) stay below this. */
    static final double NAIVE_FLOP_BUDGET = 400e9;
    /** The naive per-token low-rank experts is timed on this many tokens and scaled linearly to T. */
    static final int NAIVE_LOW_RANK_TOKENS = 64;

    private final int repeats;
    private final int gemmThreads;
    private final Device device;
    private final PrintStream out;

    /**
     * @param repeats     timed runs per measurement (the median is reported), after one warm-up
     * @param gemmThreads 1: groups in order, BLAS uses every core; more: groups spread over this many Java
     *                    threads, one BLAS thread each
     * @param device      where the grouped column runs: {@link Device#CUDA} times {@link CudaGroupedGemm} (fp32
     *                    kernel, base expert weights resident on the GPU, activations copied per call) against the
     *                    CPU loop
     */
    public MoeBench(int repeats, int gemmThreads, Device device, PrintStream out) {
        if (repeats < 1 || gemmThreads < 1) {
            throw new IllegalArgumentException("repeats and gemm threads must be at least 1, got repeats "
                    + repeats + ", gemm threads " + gemmThreads);
        }
        this.repeats = repeats;
        this.gemmThreads = gemmThreads;
        this.device = device;
        this.out = out;
    }

    public static List<Case> select(String names) {
        if (names == null || names.isBlank()) {
            return CASES;
        }
        List<Case> chosen = new ArrayList<>();
        for (String n : names.split(",")) {
            String name = n.trim();
            chosen.add(CASES.stream().filter(c -> c.name().equals(name)).findFirst().orElseThrow(() ->
                    new IllegalArgumentException("unknown bench case '" + name + "', expected one of "
                            + CASES.stream().map(Case::name).toList())));
        }
        return chosen;
    }

    /** Runs the cases with float32 weights, prints the table, and returns its rows. */
    public List<Result> run(List<Case> cases) {
        return run(cases, List.of(Weights.FP32));
    }

    /** Runs every case with every weight type (case by case), prints the table, and returns its rows. */
    public List<Result> run(List<Case> cases, List<Weights> weightTypes) {
        int cores = Runtime.getRuntime().availableProcessors();
        Nd4j.factory().blas().setMaxThreads(gemmThreads == 1 ? cores : 1);
        out.printf(Locale.ROOT, "sparkmoe bench moe: float32 compute, forward+backward, median of %d after warm-up; %d cores;"
                        + " loop and dense on every core; grouped: %s%n", repeats, cores, device == Device.CUDA
                        ? "CUDA fp32 kernel, weights resident, activations copied per call"
                        : "BLAS threads " + Nd4j.factory().blas().getMaxThreads() + ", groups " + (gemmThreads == 1
                        ? "sequential over groups" : "parallel over groups on " + gemmThreads + " threads"));
        out.printf(Locale.ROOT, "%-17s %7s %9s %9s %9s %8s %9s %9s %7s %6s %9s %11s %11s%n", "case", "weights",
                "loop ms",
                "grouped", "naive ms", "speedup", "grp GF/s", "dense GF/s", "ratio", "gemm%", "gemm GF/s", "naive MB",
                "factor. MB");
        List<Result> results = new ArrayList<>();
        for (Case c : cases) {
            for (Weights wt : weightTypes) {
                Result r = c.lowRank() ? lowRank(c, wt) : experts(c, wt);
                results.add(r);
                print(r);
            }
        }
        return results;
    }

    private void print(Result r) {
        out.printf(Locale.ROOT, "%-17s %7s %9s %9s %9s %8s %9s %9s %7s %6s %9s %11s %11s%s%n", r.name(), r.weights(),
                f(r.loopMs()), f(r.groupedMs()), f(r.naiveMs()), r.speedup() == null ? "-" : f(r.speedup()) + "x",
                f(r.groupedGflops()), f(r.denseGflops()),
                r.groupedGflops() == null ? "-" : pct(r.groupedGflops() / r.denseGflops()),
                r.gemmShare() == null ? "-" : pct(r.gemmShare()),
                r.gemmShare() == null ? "-" : f(r.groupedGflops() / r.gemmShare()), mb(r.naiveBytes()),
                mb(r.factorisedBytes()), r.note() == null ? "" : "  (" + r.note() + ")");
        out.flush();
    }

    /** The per-expert loop with every core: BLAS threads for its products, the element-wise work in parallel. */
    private static GroupedGemm loop() {
        return new LoopGroupedGemm(new Workers(Runtime.getRuntime().availableProcessors()));
    }

    private GroupedGemm grouped() {
        return device == Device.CUDA ? new CudaGroupedGemm() : new Nd4jGroupedGemm(gemmThreads);
    }

    /** The grouped GEMM for a case whose frozen weights are {@code frozen}: on the GPU they stay resident. */
    private GroupedGemm grouped(WeightStack... frozen) {
        GroupedGemm g = grouped();
        if (g instanceof CudaGroupedGemm cuda) {
            for (WeightStack w : frozen) {
                cuda.resident(w);
            }
        }
        return g;
    }

    private Result experts(Case c, Weights wt) {
        Routes routes = SyntheticRouting.routes(c.tokens(), c.experts(), c.topK(), 42);
        int n = routes.plan.rows();
        int d = c.hidden();
        int i = c.intermediate();
        int e = c.experts();
        ExpertWeights base = new ExpertWeights(stored(uniform(1, 1 / Math.sqrt(d), e, i, d), wt),  // w1 [E, I, D]
                stored(uniform(2, 1 / Math.sqrt(d), e, i, d), wt),                                 // w3 [E, I, D]
                stored(uniform(3, 1 / Math.sqrt(i), e, d, i), wt));                                // w2 [E, D, I]
        LoraExperts gate = lora(11, e, d, i, c.rank());
        LoraExperts up = lora(12, e, d, i, c.rank());
        LoraExperts down = lora(13, e, i, d, c.rank());
        INDArray x = uniform(4, 1, c.tokens(), d);                                         // [T, D]
        INDArray dOut = uniform(5, 1, c.tokens(), d);                                      // [T, D]

        FullExperts loopFfn = new FullExperts(base, gate, up, down, loop());
        double loop = BlasThreads.onAllCores(() -> passMs(loopFfn, x, routes, dOut, repeats));
        TimedGroupedGemm timed = new TimedGroupedGemm(grouped(base.w1(), base.w3(), base.w2()));
        FullExperts groupedFfn = new FullExperts(base, gate, up, down, timed);
        passMs(groupedFfn, x, routes, dOut, 1);                                            // warm-up, untimed share
        timed.nanos.set(0);
        long t0 = System.nanoTime();
        double grouped = passMs(groupedFfn, x, routes, dOut, repeats);
        double share = timed.nanos.get() / (double) (System.nanoTime() - t0);
        Double naive = null;
        String note = null;
        if (c.usefulFlops() * e <= NAIVE_FLOP_BUDGET) {
            naive = passMs(new FullExperts(base, gate, up, down, new NaiveGroupedGemm()), x, routes, dOut,
                    Math.min(repeats, 3));
        } else {
            note = "naive skipped: " + Math.round(c.usefulFlops() * e / 1e9) + " GFLOP per pass";
        }
        double flops = c.usefulFlops();
        double dense = DenseReference.medianMs(n, d, flops, repeats);
        return new Result(c.name(), wt.label(), loop, grouped, naive, loop / grouped, flops / grouped / 1e6,
                flops / dense / 1e6, null, null, share, note);
    }

    /**
     * {@code w} [E, out, in] float32 as the bench stores it: the stacked array itself, or one bf16 matrix per expert
     * (as a checkpoint's separate tensors), widened per tile by the products.
     */
    private static WeightStack stored(INDArray w, Weights wt) {
        if (wt == Weights.FP32) {
            return WeightStack.of(w);
        }
        List<INDArray> perExpert = new ArrayList<>();
        for (int g = 0; g < w.size(0); g++) {
            perExpert.add(w.slice(g).castTo(wt.stored));                                   // [out, in] bf16
        }
        return WeightStack.of(perExpert);
    }

    /**
     * The median of {@code runs} passes after one untimed, each in the thread's pass workspace, as a train step takes
     * its pass ({@code TrainStep}): the arrays of a pass are carved from memory the first pass allocated instead of
     * fresh allocations that libnd4j zero-fills and the kernel faults in. The workspace is freed after the runs.
     */
    private static double passMs(ExpertFfn ffn, INDArray x, Routes routes, INDArray dOut, int runs) {
        try {
            return Stopwatch.medianMs(1, runs, () -> {
                try (MemoryWorkspace pass = StepWorkspace.pass()) {
                    ffn.backward(ffn.forward(x, routes), dOut);
                }
            });
        } finally {
            Nd4j.getWorkspaceManager().destroyAllWorkspacesForCurrentThread();
        }
    }

    private Result lowRank(Case c, Weights wt) {
        if (wt != Weights.FP32) {
            return new Result(c.name(), wt.label(), null, null, null, null, null, null, null, null, null,
                    "not measured: low-rank experts load their base widened to float32");
        }
        int d = c.hidden();
        int i = c.intermediate();
        LowRankWeights w = LowRankWeights.random(d, i, c.experts(), c.rank(), 1.0, 0.05, DataType.FLOAT, 7);
        Routes routes = SyntheticRouting.routes(c.tokens(), c.experts(), c.topK(), 7);
        INDArray x = uniform(8, 1, c.tokens(), d);                                         // [T, D]
        INDArray dy = uniform(9, 1, c.tokens(), d);                                        // [T, D]
        LowRankExperts loopImpl = new LowRankFactorised(w, loop());
        TimedGroupedGemm timed = new TimedGroupedGemm(grouped());
        LowRankExperts groupedImpl = new LowRankFactorised(w, timed);
        double loop = BlasThreads.onAllCores(() -> passMs(loopImpl, x, routes, dy, repeats));
        passMs(groupedImpl, x, routes, dy, 1);
        timed.nanos.set(0);
        long t0 = System.nanoTime();
        double grouped = passMs(groupedImpl, x, routes, dy, repeats);
        double share = timed.nanos.get() / (double) (System.nanoTime() - t0);

        LowRankExperts naiveImpl = new LowRankNaive(w);
        int sub = Math.min(NAIVE_LOW_RANK_TOKENS, c.tokens());
        Routes routesSub = SyntheticRouting.routes(sub, c.experts(), c.topK(), 7);
        INDArray xSub = x.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(0, sub),
                org.nd4j.linalg.indexing.NDArrayIndex.all()).dup('c');
        INDArray dySub = dy.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(0, sub),
                org.nd4j.linalg.indexing.NDArrayIndex.all()).dup('c');
        double naive = passMs(naiveImpl, xSub, routesSub, dySub, Math.min(repeats, 3)) * c.tokens() / sub;
        long naiveBytes = naiveImpl.forwardBytes(c.tokens(), d, i, c.experts(), c.topK(), c.rank(), DataType.FLOAT);
        long factorisedBytes = groupedImpl.forwardBytes(c.tokens(), d, i, c.experts(), c.topK(), c.rank(),
                DataType.FLOAT);
        double flops = c.usefulFlops();
        double dense = DenseReference.medianMs(c.tokens(), d, flops, repeats);
        return new Result(c.name(), wt.label(), loop, grouped, naive, loop / grouped, flops / grouped / 1e6,
                flops / dense / 1e6, naiveBytes, factorisedBytes, share, String.format(Locale.ROOT,
                "naive timed on T=%d and scaled to T=%d; naive/factorised bytes %.1fx", sub, c.tokens(),
                naiveBytes / (double) factorisedBytes));
    }

    /** {"cases": [...]} with the fields of the issue (absent ones null) plus gemm_share and note. */
    public static void writeJson(List<Result> results, Path file) throws IOException {
        List<Map<String, Object>> rows = new ArrayList<>();
        for (Result r : results) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", r.name());
            m.put("weights", r.weights());
            m.put("loop_ms", r.loopMs());
            m.put("grouped_ms", r.groupedMs());
            m.put("naive_ms", r.naiveMs());
            m.put("speedup", r.speedup());
            m.put("grouped_gflops", r.groupedGflops());
            m.put("dense_gflops", r.denseGflops());
            m.put("naive_bytes", r.naiveBytes());
            m.put("factorised_bytes", r.factorisedBytes());
            m.put("gemm_share", r.gemmShare());
            m.put("gemm_gflops", r.gemmShare() == null ? null : r.groupedGflops() / r.gemmShare());
            m.put("note", r.note());
            rows.add(m);
        }
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("cases", rows);
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        Path tmp = Files.createTempFile(parent, file.getFileName().toString(), ".tmp");
        new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(tmp.toFile(), root);
        Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                java.nio.file.StandardCopyOption.ATOMIC_MOVE);
    }

    private static LoraExperts lora(long seed, int e, int in, int out, int rank) {
        INDArray a = uniform(seed, 1 / Math.sqrt(in), e, rank, in);                       // [E, R, in]
        INDArray b = uniform(seed + 100, 0.01, e, out, rank);                              // [E, out, R], B ≠ 0
        return new LoraExperts(a, b, 2.0 * rank);
    }

    /** U(−bound, bound), float32, seeded. */
    private static INDArray uniform(long seed, double bound, long... shape) {
        Nd4j.getRandom().setSeed(seed);
        return Nd4j.rand(DataType.FLOAT, shape).subi(0.5).muli(2 * bound);
    }

    private static String f(Double v) {
        return v == null ? "-" : String.format(Locale.ROOT, v >= 100 ? "%.0f" : "%.1f", v);
    }

    private static String pct(double v) {
        return String.format(Locale.ROOT, "%.0f%%", 100 * v);
    }

    private static String mb(Long bytes) {
        return bytes == null ? "-" : String.format(Locale.ROOT, "%.1f", bytes / 1048576.0);
    }
}
