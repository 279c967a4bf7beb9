package org.sparkmoe.driver.calib;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.adapter.AdaptedModel;
import org.sparkmoe.driver.layerwise.LayerwiseOptions;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.driver.DryRunOption;
import org.sparkmoe.driver.GpuMemoryPlan;
import org.sparkmoe.driver.MemoryPlan;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.DataOptions;
import org.sparkmoe.driver.DeviceOptions;
import org.sparkmoe.driver.ModelOption;
import org.sparkmoe.driver.WindowOption;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.driver.SparkOptions;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.Callable;

/** {@code sparkmoe calibrate}: validates options, plans, runs {@link CalibrateJob}, writes the outputs. */
@Command(name = "calibrate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Router statistics of an MoE model over calibration text, as a Spark job.",
                "Each file's split is tokenized and cut into windows; every window is forwarded and each MoE layer's "
                        + "routing is added to exact, mergeable accumulators (identical for any partitioning). Writes "
                        + "OUT/router-stats.json, OUT/report.html (self-contained, inline SVG), "
                        + "OUT/expert-activations.safetensors and OUT/expert-scores.json (per expert: routed tokens, "
                        + "frequency, REAP saliency, EAN; what 'surgery prune' ranks by); with --export-router-data also "
                        + "DL4J DataSet files under OUT/router-data/layer-N/ for retrain-router."})
public final class CalibrateCommand implements Callable<Integer> {
    @Mixin
    ModelOption model;

    @Mixin
    DataOptions data = new DataOptions("valid");

    @Mixin
    WindowOption window;

    @Option(names = "--max-tokens-per-file", paramLabel = "N",
            description = "Use only the first ⌊N/S⌋·S tokens of each file's split. Default: all of it.")
    Integer maxTokensPerFile;

    @Option(names = "--all-experts",
            description = "For the activation statistics, run every token through every expert (so no expert is left "
                    + "without data); routing statistics and expert-scores.json (REAP and EAN are defined over the "
                    + "routed tokens) are unchanged.")
    boolean allExperts;

    @Option(names = "--min-expert-tokens", defaultValue = "0", paramLabel = "N",
            description = "List the experts routed fewer than N tokens (console, rare_experts in expert-scores.json, "
                    + "the rare experts of report.html). "
                    + "Default: ${DEFAULT-VALUE} (none).")
    int minExpertTokens;

    @Option(names = "--strict",
            description = "With --min-expert-tokens: exit 1 after writing the outputs when some expert is below N.")
    boolean strict;

    @Option(names = "--export-router-data",
            description = "Also write router training sets: per MoE layer, DL4J DataSet files (features: router inputs "
                    + "[S,D]; labels: softmax of the router logits [S,E]), one per window, under OUT/router-data/layer-N/. "
                    + "An earlier OUT/router-data is replaced.")
    boolean exportRouterData;

    @Option(names = "--imatrix", paramLabel = "FILE",
            description = "Also collect every linear layer's importance sums (Σ x² per input column and the token "
                    + "count, per expert for the routed experts; with --all-experts every expert sees every token) and "
                    + "write them as llama.cpp's importance matrix to FILE, for llama-quantize --imatrix.")
    String imatrix;

    @Option(names = "--imatrix-format", paramLabel = "gguf|dat",
            description = "The --imatrix file's format: gguf (llama.cpp's current one) or dat (its legacy binary "
                    + "one). Default: gguf.")
    String imatrixFormat;

    @Option(names = "--adapter", paramLabel = "DIR",
            description = "Adapter folder applied unmerged while calibrating: PEFT LoRA (as eval applies it) or a μMoE "
                    + "adapter (train --adapter mumoe-*). Default: none, the model alone.")
    String adapter;

    @Option(names = "--batch-windows", defaultValue = "8", paramLabel = "B",
            description = "Windows per forward pass. Default: ${DEFAULT-VALUE}.")
    int batchWindows;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "Output folder (created if missing).")
    String out;

    @Mixin
    LayerwiseOptions layerwise;

    @Mixin
    SparkOptions spark;

    @Mixin
    DeviceOptions device;

    @Mixin
    DryRunOption dryRun;

    @Override
    public Integer call() {
        Device chosen = device.resolve();
        Configuration conf = new Configuration();
        ModelConfig config = validate(conf);
        String imatrixUri = imatrixTarget(conf);
        String outUri = Paths.qualify(out, conf);
        OutputFolder.requireFolder("--out", new Path(outUri), conf, "calibrate");
        if (layerwise.asked() && adapter != null) {
            throw new IllegalArgumentException("--layerwise runs the plain model: drop --adapter, or --layerwise");
        }
        CalibratePlan plan = plan(conf, config, outUri, chosen);
        List<String> names = plan.data().stream().map(d -> new Path(d).getName()).toList();
        int[] layers = CalibrationStats.moeLayerIndices(config);
        SparkLimits limits = SparkLimits.of(SparkContexts.conf("sparkmoe calibrate", spark.master), spark.partitions);
        MemoryPlan whole = MemoryPlan.of(MemoryPlan.Job.CALIBRATE, config, MemoryPlan.mappedBytes(plan.model(), conf),
                batchWindows, plan.window(), 0, limits);
        LayerwiseOptions.Choice choice = layerwise.choose(config, conf, whole,
                MemoryPlan.tensorBytes(plan.model(), conf), batchWindows, plan.window(),
                adapter != null ? "--adapter" : null);
        LayerwisePlan pass = choice.pass();
        if (choice.chosen() != null) {
            System.err.println(choice.chosen());
        }
        if (dryRun.show(choice.memory(), GpuMemoryPlan.forJob(chosen, config, batchWindows, plan.window(), plan.adapter(),
                pass != null, conf))) {
            return 0;
        }
        CalibrateJob.Result result;
        try (JavaSparkContext sc = SparkContexts.start("sparkmoe calibrate", spark.master)) {
            CalibratePlan withPartitions = plan.withPartitions(spark.partitionsOr(sc.defaultParallelism()));
            long start = System.nanoTime();
            result = pass == null ? CalibrateJob.run(sc, withPartitions, config, imatrixUri != null)
                    : CalibrateJob.runLayerwise(sc, withPartitions, config, pass, imatrixUri != null);
            double seconds = (System.nanoTime() - start) / 1e9;
            long tokens = result.stats().layer(0).tokens();
            System.err.printf("calibrate: %d tokens in %.1f s (%.0f tokens/s)%n", tokens, seconds, tokens / seconds);
        }
        System.out.print(CalibrationSummary.text(result.stats(), layers, names));
        CalibrateOutputs.write(conf, outUri, plan, config, result.stats(), minExpertTokens);
        System.err.println("calibrate: wrote " + CalibrateOutputs.STATS_FILE + ", " + CalibrateOutputs.REPORT_FILE
                + ", " + CalibrateOutputs.ACTIVATIONS_FILE + ", " + CalibrateOutputs.EXPERT_SCORES_FILE
                + (plan.routerData() != null ? " and router-data/" : "") + " to " + outUri);
        if (imatrixUri != null) {
            CalibrateOutputs.writeImatrix(conf, imatrixUri, imatrixFormat, plan, config, result);
            System.err.println("calibrate: wrote the importance matrix (" + imatrixFormat + ") to " + imatrixUri);
        }
        listRareExperts(config, result);
        return 0;
    }

    /** Lists the experts below --min-expert-tokens; with --strict, fails (exit 1) when there are some. */
    private void listRareExperts(ModelConfig config, CalibrateJob.Result result) {
        List<ExpertScoresJson.Rare> rare = ExpertScoresJson.rare(config, result.stats(), minExpertTokens);
        if (rare.isEmpty()) {
            return;
        }
        String line = rare.size() + " expert" + (rare.size() == 1 ? "" : "s") + " routed fewer than "
                + "--min-expert-tokens " + minExpertTokens + " tokens: " + String.join(", ",
                rare.stream().limit(5).map(ExpertScoresJson.Rare::toString).toList()) + (rare.size() > 5 ? ", ..." : "");
        if (strict) {
            throw new IllegalArgumentException("--strict: " + line + " (outputs written to " + out + ")");
        }
        System.out.println(line);
    }

    /** The --imatrix file's URI (null without one), its format checked and its folder existing. */
    private String imatrixTarget(Configuration conf) {
        if (imatrix == null) {
            if (imatrixFormat != null) {
                throw new IllegalArgumentException("--imatrix-format " + imatrixFormat + " needs --imatrix FILE");
            }
            return null;
        }
        if (imatrixFormat == null) {
            imatrixFormat = "gguf";
        } else if (!imatrixFormat.equals("gguf") && !imatrixFormat.equals("dat")) {
            throw new IllegalArgumentException("--imatrix-format must be gguf or dat, got " + imatrixFormat);
        }
        String uri = Paths.qualify(imatrix, conf);
        Path target = new Path(uri);
        try {
            FileSystem fs = target.getFileSystem(conf);
            if (fs.isDirectory(target)) {
                throw new IllegalArgumentException("--imatrix " + imatrix + " is a folder; expected a file to write");
            }
            if (target.getParent() != null && !fs.isDirectory(target.getParent())) {
                throw new IllegalArgumentException("--imatrix " + imatrix + ": the folder " + target.getParent()
                        + " does not exist");
            }
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException("looking up --imatrix " + uri + ": " + e.getMessage(), e);
        }
        return uri;
    }

    /** Validates the model before Spark starts (the plan checks the flags' values). */
    private ModelConfig validate(Configuration conf) {
        if (minExpertTokens < 0) {
            throw new IllegalArgumentException("--min-expert-tokens must be ≥ 0, got " + minExpertTokens);
        }
        if (strict && minExpertTokens == 0) {
            throw new IllegalArgumentException("--strict needs --min-expert-tokens N (N ≥ 1)");
        }
        Path modelDir = new Path(model.uri(conf));
        ModelConfig config = ModelFolder.readConfig(modelDir, conf);
        try (Checkpoint checkpoint = Checkpoint.open(modelDir, conf)) {
            ModelSchema.check(config, checkpoint);
        }
        Tokenizers.checked(modelDir.toString(), config.vocab_size);
        if (config.num_experts == 0 || CalibrationStats.moeLayerIndices(config).length == 0) {
            throw new IllegalArgumentException(modelDir + " is a dense model (" + config.modelType
                    + "); calibrate needs MoE layers");
        }
        return config;
    }

    private CalibratePlan plan(Configuration conf, ModelConfig config, String outUri, Device chosen) {
        String routerData = exportRouterData ? new Path(outUri, "router-data").toString() : null;
        CalibratePlan checked = new CalibratePlan(model.uri(conf), data.files, data.textSplit(), window.window,
                maxTokensPerFile == null ? 0 : maxTokensPerFile, config.num_experts_per_tok, batchWindows, 1,
                allExperts, routerData, chosen);
        if (checked.window() > config.max_position_embeddings) {
            throw new IllegalArgumentException("--window " + checked.window() + " exceeds the model's "
                    + "max_position_embeddings " + config.max_position_embeddings);
        }
        List<String> files = data.uris(conf);
        Set<String> names = new HashSet<>();
        for (String f : files) {
            if (!names.add(new Path(f).getName())) {
                throw new IllegalArgumentException("two --data files share the name " + new Path(f).getName()
                        + " (the statistics are keyed by file name)");
            }
        }
        String adapterUri = adapter == null ? null : Paths.qualify(adapter, conf);
        if (adapterUri != null) {
            AdaptedModel.check(new Path(adapterUri), conf, config, null); // reject a bad adapter before Spark starts
        }
        return new CalibratePlan(checked.model(), files, checked.split(), checked.window(),
                checked.maxTokensPerFile(), checked.topK(), batchWindows, 1, allExperts, routerData, chosen, adapterUri);
    }
}
