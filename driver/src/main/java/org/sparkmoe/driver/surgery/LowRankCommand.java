package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.driver.DataOptions;
import org.sparkmoe.driver.DeviceOptions;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.layerwise.LayerwisePassOptions;
import org.sparkmoe.experts.CpExperts;
import org.sparkmoe.experts.TrExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.surgery.DistillOptions;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.LayerSurgery;
import org.sparkmoe.surgery.LowRankCpSurgery;
import org.sparkmoe.surgery.LowRankSurgery;
import org.sparkmoe.surgery.LowRankTrSurgery;
import org.sparkmoe.surgery.MergeWeights;
import org.sparkmoe.surgery.RoutingStats;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code sparkmoe surgery lowrank}: experts → shared base + rank-R LoRA experts (truncated SVD). */
@Command(name = "lowrank", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Convert each MoE layer's experts into one shared base FFN plus E rank-R LoRA experts: per "
                + "projection, base = mean of the experts (uniform, or weighted by calibration selection counts), and "
                + "W_e ≈ base + B_e·A_e by truncated SVD of W_e − base. The model then runs as low-rank "
                + "experts: per token one FFN with weights base + Σ_k g_k·B_k·A_k. For models with full experts and no "
                + "gated shared expert: mixtral, qwen3_moe, olmoe, glm4_moe, gpt_oss (expert biases kept per expert), "
                + "deepseek_v2/v3 (shared experts kept).",
                "Prints, per layer, the relative Frobenius error of each projection and the expert parameters before "
                        + "and after.",
                "With --distill-steps N, each layer's LoRA experts (A and B of w1, w3, w2) are then trained with AdamW "
                        + "to reproduce the original MoE layer's outputs on calibration hidden states (the inputs the "
                        + "original model gives that layer on the --data files' --split), minimising the relative "
                        + "squared error Σ‖ŷ − y‖² / Σ‖y‖²; the shared base and the router stay frozen. The original "
                        + "model runs as a layer-sequential pass over the windows (--expert-groups, --checkpoint-dir as "
                        + "for eval --layerwise); each layer trains in one Spark task while the pass goes on; "
                        + "surgery.json and the console report the error before and after.",
                "With --form cp, each projection's stacked experts [E, out, in] are instead factorised by CP-ALS into "
                        + "U_N [E, R], U_I [in, R], U_O [out, R] (no shared base; W_e = U_O·diag(U_N[e])·U_Iᵀ); the "
                        + "model then runs as an MoE whose routed experts compute U_O·(U_N[e] ⊙ U_Iᵀx). Not for "
                        + "gpt_oss (expert biases); --distill-steps trains all its factors (the router frozen).",
                "With --form tr, each projection's stacked experts are instead a tensor ring of ranks (R, R, R) fitted "
                        + "by TR-ALS: cores G_N [R, E, R], G_I [R, in, R], G_O [R, out, R], "
                        + "W_e[o, i] = trace(G_N[:, e, :]·G_I[:, i, :]·G_O[:, o, :]), R²·(E + in + out) parameters per "
                        + "projection; the model runs as an MoE like --form cp's. Not for gpt_oss; --distill-steps "
                        + "trains all its cores (the router frozen)."})
public final class LowRankCommand implements Callable<Integer> {
    /** The options that only the distillation reads. */
    private static final List<String> DISTILL_ONLY = List.of("--data", "--split", "--window", "--distill-tokens",
            "--distill-batch", "--distill-lr", "--distill-warmup", "--distill-weight-decay", "--seed",
            "--expert-groups", "--checkpoint-dir", "--checkpoint-every");
    /** Options only --form cp and tr read, and those only --form svd reads. */
    private static final List<String> ALS_ONLY = List.of("--als-iterations", "--als-tolerance");
    private static final List<String> SVD_ONLY = List.of("--base", "--stats");
    static final int DEFAULT_ALS_ITERATIONS = 100;
    static final double DEFAULT_ALS_TOLERANCE = 1e-6;
    /** Windows per chunk of the distillation's pass: a chunk's hidden states are [this · window, hidden] floats. */
    static final int CHUNK_WINDOWS = 8;

    @Spec
    CommandSpec spec;

    @Mixin
    SurgeryOptions options;

    @Mixin
    DeviceOptions device;

    @Mixin
    LayerwisePassOptions pass;

    @Option(names = "--rank", required = true, paramLabel = "R",
            description = "svd: LoRA rank of every expert; cp: the CP rank; tr: every rank of the ring.")
    int rank;

    @Option(names = "--form", defaultValue = "svd", paramLabel = "svd|cp|tr",
            description = "svd: shared base + rank-R LoRA experts; cp: a rank-R CP decomposition of each projection's "
                    + "stacked experts; tr: a tensor ring of ranks (R, R, R) through them. Default: ${DEFAULT-VALUE}.")
    String form;

    @Option(names = "--als-iterations", defaultValue = "" + DEFAULT_ALS_ITERATIONS, paramLabel = "N",
            description = "--form cp|tr: ALS sweeps at most per projection. Default: ${DEFAULT-VALUE}.")
    int alsIterations;

    @Option(names = "--als-tolerance", defaultValue = "" + DEFAULT_ALS_TOLERANCE, paramLabel = "T",
            description = "--form cp|tr: stop when a projection's relative error changes by less than T between "
                    + "sweeps. Default: ${DEFAULT-VALUE}.")
    double alsTolerance;

    @Option(names = "--base", defaultValue = "mean", paramLabel = "mean|router-weighted",
            description = "How the shared base weighs the experts. Default: ${DEFAULT-VALUE}.")
    String base;

    @Option(names = "--distill-steps", defaultValue = "0", paramLabel = "N",
            description = "AdamW steps of layer-wise distillation per MoE layer; 0 for none. Default: ${DEFAULT-VALUE}.")
    int distillSteps;

    @Option(names = "--data", split = ",", paramLabel = "PATH",
            description = "Calibration text files for the distillation (needed with --distill-steps).")
    List<String> data;

    @Option(names = "--split", defaultValue = "valid", paramLabel = "train|valid|test|all",
            converter = DataOptions.SplitConverter.class, description = "Split of each --data file the distillation reads. Default: ${DEFAULT-VALUE}.")
    TextSplit split;

    @Option(names = "--window", defaultValue = "256", paramLabel = "S",
            description = "Tokens per window forwarded through the original model. Default: ${DEFAULT-VALUE}.")
    int window;

    @Option(names = "--distill-tokens", defaultValue = "4096", paramLabel = "N",
            description = "Calibration tokens per file: the first ⌊N/S⌋ windows of its split. Default: ${DEFAULT-VALUE}.")
    int distillTokens;

    @Option(names = "--distill-batch", defaultValue = "512", paramLabel = "B",
            description = "Tokens per distillation step, drawn without replacement. Default: ${DEFAULT-VALUE}.")
    int distillBatch;

    @Option(names = "--distill-lr", defaultValue = "1e-2", paramLabel = "LR",
            description = "Peak AdamW learning rate (linear warmup, then cosine decay to 0). Default: ${DEFAULT-VALUE}.")
    double distillLr;

    @Option(names = "--distill-warmup", paramLabel = "N", description = "Warmup steps. Default: a tenth of the steps.")
    Integer distillWarmup;

    @Option(names = "--distill-weight-decay", defaultValue = "0.0", paramLabel = "λ",
            description = "AdamW weight decay (pulls the experts towards the base). Default: ${DEFAULT-VALUE}.")
    double distillWeightDecay;

    @Option(names = "--seed", defaultValue = "42", paramLabel = "S",
            description = "Root seed; each layer's minibatch order (and, --form cp|tr, each projection's initial "
                    + "factors) derives from it. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Override
    public Integer call() {
        String chosen = SurgeryRun.choice(spec, "--form", form, Map.of("svd", "svd", "cp", "cp", "tr", "tr"));
        boolean als = !chosen.equals("svd");
        for (String option : als ? SVD_ONLY : ALS_ONLY) {
            if (spec.commandLine().getParseResult().hasMatchedOption(option)) {
                throw new IllegalArgumentException(option + " is read only by --form " + (als ? "svd" : "cp and tr"));
            }
        }
        return als ? als(chosen) : svd();
    }

    /** --form cp|tr: CP-ALS or TR-ALS per (layer, projection), optionally distilled. */
    private int als(String chosen) {
        if (distillSteps == 0) {
            for (String option : DISTILL_ONLY) {
                if (!option.equals("--seed") && spec.commandLine().getParseResult().hasMatchedOption(option)) {
                    throw new IllegalArgumentException(option + " is read only by the distillation: add "
                            + "--distill-steps N");
                }
            }
        }
        SurgeryRun run = new SurgeryRun(options);
        LayerSurgery surgery = chosen.equals("cp")
                ? new LowRankCpSurgery(run.config, rank, alsIterations, alsTolerance, seed)
                : new LowRankTrSurgery(run.config, rank, alsIterations, alsTolerance, seed);
        ObjectNode settings = SurgeryRun.settings();
        settings.put("form", chosen);
        settings.put("rank", rank);
        settings.put("als_iterations", alsIterations);
        settings.put("als_tolerance", alsTolerance);
        settings.put("seed", seed);
        printParameters(distilled(run, surgery, settings, distillSteps == 0 ? null : distillPlan(run)));
        return 0;
    }

    /** --form svd: shared base + truncated SVD per expert, optionally distilled. */
    private int svd() {
        boolean weighted = SurgeryRun.choice(spec, "--base", base, Map.of("mean", false, "router-weighted", true));
        SurgeryRun run = new SurgeryRun(options);
        RoutingStats stats = weighted ? run.stats("--base router-weighted") : null;
        double[][] weights = new double[run.moeLayers.length][];
        for (int i = 0; i < weights.length; i++) {
            weights[i] = weighted ? LowRankSurgery.frequencyWeights(stats.layer(i).count())
                    : MergeWeights.uniform(run.config.num_experts);
        }
        LowRankSurgery surgery = new LowRankSurgery(run.config, rank, weights);
        ObjectNode settings = SurgeryRun.settings();
        settings.put("rank", rank);
        settings.put("base", base);
        printParameters(distilled(run, surgery, settings, distillPlan(run)));
        return 0;
    }

    /**
     * Runs {@code surgery} (either form) and, with a plan, its distillation; only the plan with --dry-run.
     *
     * @return the per-layer results, in MoE layer order; null with --dry-run
     */
    private List<LayerResult> distilled(SurgeryRun run, LayerSurgery surgery, ObjectNode settings,
            DistillPlan distill) {
        if (run.planOnly(surgery, plan -> distill == null ? plan : plan.distilling(run.modelDir.toString(), run.conf,
                run.config, distill.batchWindows(), window, distill.maxTokens(), distillBatch,
                formFloats(run.config)))) {
            return null;
        }
        if (distill == null) {
            return run.execute("lowrank", surgery, settings);
        }
        settings.set("distill", distillSettings(distill));
        String model = run.modelDir.toString();
        int[] layers = run.moeLayers;
        List<LayerResult> results = run.execute("lowrank", surgery, settings, Map.of(),
                (sc, lowRank, partitions, staging) ->
                        DistillJob.run(sc, model, run.config, layers, lowRank, distill, partitions, staging));
        System.out.printf("distillation: relative MSE of the MoE layers' outputs %s before, %s after%n",
                list(results, "distill_rel_mse_before"), list(results, "distill_rel_mse_after"));
        for (int i = 0; i < results.size(); i++) {
            Map<String, Double> m = results.get(i).metrics();
            if (m.getOrDefault("distill_kept_start", 0.0) == 1.0) {
                System.out.printf("distillation: layer %d ended its training at relative MSE %.6g, above its start "
                                + "%.6g: it keeps its starting factors (a lower --distill-lr may help)%n", layers[i],
                        m.get("distill_rel_mse_trained"), m.get("distill_rel_mse_before"));
            }
        }
        return results;
    }

    /** Nothing for a --dry-run (null). */
    private static void printParameters(List<LayerResult> results) {
        if (results == null) {
            return;
        }
        double before = sum(results, "_params_before");
        double after = sum(results, "_params_after");
        System.out.printf("expert parameters: %.0f before, %.0f after (%.4f of before)%n", before, after, after / before);
    }

    /** The --form's factor-space activations per token of a distillation step, floats (none counted for svd). */
    private long formFloats(ModelConfig c) {
        return switch (form) {
            case "cp" -> CpExperts.factorFloatsPerToken(c.num_experts_per_tok, rank);
            case "tr" -> TrExperts.factorFloatsPerToken(c.num_experts_per_tok, rank, rank, rank);
            default -> 0;
        };
    }

    /** The distillation's plan, checked; null without --distill-steps. */
    private DistillPlan distillPlan(SurgeryRun run) {
        if (distillSteps < 0) {
            throw new IllegalArgumentException("--distill-steps must be ≥ 0, got " + distillSteps);
        }
        if (distillSteps == 0) {
            for (String option : DISTILL_ONLY) {
                if (spec.commandLine().getParseResult().hasMatchedOption(option)) {
                    throw new IllegalArgumentException(option + " is read only by the distillation: add --distill-steps N");
                }
            }
            return null;
        }
        if (data == null || data.isEmpty()) {
            throw new IllegalArgumentException("--distill-steps needs --data (calibration text files)");
        }
        if (window < 2 || window > run.config.max_position_embeddings) {
            throw new IllegalArgumentException("--window must be in [2, " + run.config.max_position_embeddings
                    + "] (max_position_embeddings), got " + window);
        }
        if (distillTokens < window) {
            throw new IllegalArgumentException("--distill-tokens must be at least one window (" + window + "), got "
                    + distillTokens);
        }
        List<String> files = data.stream().map(p -> Paths.qualify(p, run.conf)).toList();
        files.forEach(f -> Paths.requireTextFile(f, run.conf));
        Tokenizers.checked(run.modelDir.toString(), run.config.vocab_size);
        DistillOptions options = new DistillOptions(distillSteps, distillLr,
                distillWarmup == null ? distillSteps / 10 : distillWarmup, distillBatch, distillWeightDecay, seed);
        return new DistillPlan(files, split, window, distillTokens, CHUNK_WINDOWS, options,
                device.resolve(), pass.plan(run.config, run.conf));
    }

    private static ObjectNode distillSettings(DistillPlan plan) {
        ObjectNode node = SurgeryRun.settings();
        node.put("steps", plan.options().steps());
        node.put("lr", plan.options().lr());
        node.put("warmup", plan.options().warmup());
        node.put("batch_tokens", plan.options().batchTokens());
        node.put("weight_decay", plan.options().weightDecay());
        node.put("seed", plan.options().seed());
        node.put("split", plan.split().toString());
        node.put("window", plan.window());
        node.put("tokens_per_file", plan.tokensPerFile());
        plan.data().forEach(node.putArray("data")::add);
        return node;
    }

    /** Each layer's metric {@code name}, formatted. */
    private static String list(List<LayerResult> results, String name) {
        return results.stream().map(r -> String.format(Locale.ROOT, "%.4f", r.metrics().get(name))).toList().toString();
    }

    /** Σ over layers and projections of the metrics whose name ends with {@code suffix}. */
    private static double sum(List<LayerResult> results, String suffix) {
        return results.stream().flatMap(r -> r.metrics().entrySet().stream()).filter(e -> e.getKey().endsWith(suffix))
                .mapToDouble(Map.Entry::getValue).sum();
    }
}
