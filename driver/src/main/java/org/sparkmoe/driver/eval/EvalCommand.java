package org.sparkmoe.driver.eval;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.DataOptions;
import org.sparkmoe.driver.DeviceOptions;
import org.sparkmoe.driver.DryRunOption;
import org.sparkmoe.driver.GpuMemoryPlan;
import org.sparkmoe.driver.layerwise.LayerwiseOptions;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.sparkmoe.driver.MemoryPlan;
import org.sparkmoe.driver.ModelWarmup;
import org.sparkmoe.kernels.Nd4jLoad;
import org.sparkmoe.driver.data.TokenizeStage;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.driver.ModelOption;
import org.sparkmoe.driver.PeftVersionOption;
import org.sparkmoe.driver.WindowOption;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.driver.SparkOptions;
import org.sparkmoe.adapter.AdaptedModel;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.adapter.MutedExperts;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.charset.StandardCharsets;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.Callable;

/** {@code sparkmoe eval}: validates options, plans, runs {@link EvalJob}, writes the report. */
@Command(name = "eval", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Windowed perplexity of a model over text files, as a Spark job.",
                "Each file's split is tokenized, cut into non-overlapping windows (remainder dropped) and positions "
                        + "1..S-1 of every window are scored. Prints one line per file and writes a JSON report."})
public final class EvalCommand implements Callable<Integer> {
    @Mixin
    ModelOption model;

    @Option(names = "--adapter", paramLabel = "DIR",
            description = "Adapter folder (adapter_config.json, adapter_model.safetensors): PEFT LoRA, applied as PEFT "
                    + "runs it unmerged: LoRA products beside the frozen expert weights, and its routers if it trained "
                    + "them; or a μMoE adapter (train --adapter mumoe-*), its terms beside the projections it adapts. "
                    + "No merged copy of the model is made.")
    String adapter;

    @Mixin
    PeftVersionOption peftVersion;

    @Mixin
    DataOptions data = new DataOptions("test");

    @Mixin
    WindowOption window;

    @Option(names = "--baseline", paramLabel = "DIR",
            description = "The original model to compare with, in the same pass: per file and overall, mean and 99th "
                    + "percentile KL(baseline ‖ model) per token, the share of tokens with the same top-1, both "
                    + "perplexities and their difference (llama.cpp's perplexity --kl-divergence numbers). Same "
                    + "tokenizer and vocabulary; any expert count. Runs at its own num_experts_per_tok; every task "
                    + "holds both models.")
    String baseline;

    @Option(names = "--mute-experts", paramLabel = "LIST",
            description = "With a μMoE --adapter: silence these experts (their slice of the expert tensor set to zero; "
                    + "the other experts' gates are not renormalised) and compare with the same adapter unmuted, as "
                    + "--baseline compares: per file and overall both perplexities, Δppl and KL divergence. LIST: "
                    + "comma-separated LAYER.SITE:EXPERT (e.g. 0.moe:12) or EXPERT (at every site); calibrate "
                    + "--adapter's mumoe-experts.json lists each file's most specific experts in this form. A "
                    + "hierarchical adapter's EXPERT is the product (n1, n2) numbered n1·N2 + n2; its term is "
                    + "subtracted exactly.")
    String muteExperts;

    @Option(names = "--top-k", paramLabel = "K",
            description = "Experts per token, overriding config.json (no rescaling). Default: the model's.")
    Integer topK;

    @Option(names = "--batch-windows", defaultValue = "8", paramLabel = "B",
            description = "Windows per forward pass. Default: ${DEFAULT-VALUE}.")
    int batchWindows;

    @Option(names = "--out", paramLabel = "FILE", description = "Write the JSON report here (atomically).")
    String out;

    @Mixin
    LayerwiseOptions layerwise;

    @Mixin
    SparkOptions spark;

    @Mixin
    DeviceOptions device;

    @Mixin
    DryRunOption dryRun;

    private Measured measured;

    /**
     * What the last {@link #call} measured: scored tokens, the job's seconds (Spark started, model leased, every
     * window scored), the tokens one forward pass takes ({@code --batch-windows × --window}) and the model folder.
     */
    public record Measured(long tokens, double seconds, int forwardTokens, String model) {
    }

    /** @return the measurement of the last run, or null before one (or after a --dry-run) */
    public Measured measured() {
        return measured;
    }

    @Override
    public Integer call() {
        Device chosen = device.resolve();
        Configuration conf = new Configuration();
        EvalPlan plan = plan(conf, chosen);
        ModelConfig config = ModelFolder.readConfig(new Path(plan.model()), conf);
        Baseline against = plan.muted().isEmpty() ? baseline == null ? null : baseline(conf, config, plan.window())
                : new Baseline(plan.model(), plan.topK(), plan.adapter()); // the unmuted adapter, on the same base model
        String keepsWhole = adapter != null ? "--adapter" : baseline != null ? "--baseline" : null;
        if (layerwise.asked() && keepsWhole != null) {
            throw new IllegalArgumentException("--layerwise runs the plain model: drop " + keepsWhole
                    + ", or --layerwise");
        }
        SparkConf sparkConf = SparkContexts.conf("sparkmoe eval", spark.master);
        SparkLimits limits = SparkLimits.of(sparkConf, spark.partitions);
        long mapped = MemoryPlan.mappedBytes(plan.model(), conf);
        MemoryPlan whole = MemoryPlan.of(MemoryPlan.Job.EVAL, config, mapped,
                batchWindows, plan.window(), 0, limits);
        if (against != null && against.adapter() == null) {
            whole = whole.withBaseline(ModelFolder.readConfig(new Path(against.model()), conf),
                    MemoryPlan.mappedBytes(against.model(), conf), batchWindows, plan.window());
        }
        LayerwiseOptions.Choice choice = layerwise.choose(config, conf, whole,
                MemoryPlan.tensorBytes(plan.model(), conf), batchWindows, plan.window(), keepsWhole);
        LayerwisePlan pass = choice.pass();
        if (choice.chosen() != null) {
            System.err.println(choice.chosen());
        }
        if (dryRun.show(choice.memory(), GpuMemoryPlan.forJob(chosen, config, batchWindows, plan.window(), plan.adapter(),
                pass != null, conf))) {
            return 0;
        }
        Nd4jLoad.now();   // before the tokenizer's and the warm-up's threads load native libraries of their own
        // while Spark starts: the inputs tokenized, and a small model loaded and run once (embedded masters)
        TokenizeStage.startEarly(plan.model(), plan.data(), plan.split(), conf);
        ModelWarmup warmup = against != null || pass != null ? null : ModelWarmup.start(sparkConf.get("spark.master"),
                plan.device(), mapped, plan.window(), plan.topK(), () -> ModelCache.lease(plan.model(), plan.adapter(),
                        plan.peftVersion(), plan.muted(), plan.device()));
        String summary;
        String json;
        try (JavaSparkContext sc = SparkContexts.start("sparkmoe eval", spark.master)) {
            int partitions = spark.partitionsOr(sc.defaultParallelism());
            EvalPlan withPartitions = plan.withPartitions(partitions);
            long start = System.nanoTime();
            if (warmup != null) {
                warmup.close();
            }
            long tokens;
            if (against == null) {
                PerplexityReport report = pass == null ? EvalJob.run(sc, withPartitions)
                        : EvalJob.runLayerwise(sc, withPartitions, pass);
                tokens = report.all().tokens();
                summary = report.summary();
                json = report.reportJson();
            } else {
                DivergenceReport report = EvalJob.runAgainst(sc, withPartitions, against);
                tokens = report.all().tokens();
                summary = report.summary();
                json = report.toJson();
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            System.err.printf("eval: %d scored tokens in %.1f s (%.0f tokens/s)%n", tokens, seconds,
                    tokens / seconds);
            measured = new Measured(tokens, seconds, batchWindows * plan.window(), plan.model());
        }
        System.out.print(summary);
        if (out != null) {
            String target = Paths.qualify(out, conf);
            AtomicFile.write(Paths.fileSystem(target, conf), new Path(target), json.getBytes(StandardCharsets.UTF_8));
            System.err.println("eval: wrote " + target);
        }
        return 0;
    }

    /**
     * The --baseline model, checked before Spark starts: a valid model folder whose tokenizer.json holds the same JSON
     * as the model's (formatting aside), with the same vocab_size, and whose positions reach the window.
     */
    private Baseline baseline(Configuration conf, ModelConfig config, int windowTokens) {
        String baselineUri = Paths.qualify(baseline, conf);
        ModelConfig original = ModelFolder.readConfig(new Path(baselineUri), conf);
        try (Checkpoint checkpoint = Checkpoint.open(new Path(baselineUri), conf)) {
            ModelSchema.check(original, checkpoint);
        }
        if (original.vocab_size != config.vocab_size) {
            throw new IllegalArgumentException("--baseline " + baseline + " has vocab_size " + original.vocab_size
                    + ", the model " + config.vocab_size + "; KL divergence needs the same vocabulary");
        }
        String modelUri = model.uri(conf);
        if (!tokenizerJson(baselineUri, conf).equals(tokenizerJson(modelUri, conf))) {
            throw new IllegalArgumentException("--baseline " + baseline + " has another tokenizer.json than the model "
                    + modelUri + "; KL divergence needs the same tokenizer");
        }
        if (windowTokens > original.max_position_embeddings) {
            throw new IllegalArgumentException("--window " + windowTokens + " exceeds the baseline's "
                    + "max_position_embeddings " + original.max_position_embeddings);
        }
        return new Baseline(baselineUri, original.num_experts_per_tok);
    }

    private static JsonNode tokenizerJson(String modelUri, Configuration conf) {
        Path file = new Path(modelUri, "tokenizer.json");
        try {
            return new ObjectMapper().readTree(TextFiles.readUtf8(file, conf));
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("tokenizer file " + file + " is not JSON: " + e.getOriginalMessage(), e);
        }
    }

    /** Validates everything that can be checked before Spark starts (the plan checks its own values). */
    private EvalPlan plan(Configuration conf, Device chosen) {
        String modelUri = model.uri(conf);
        ModelConfig config = ModelFolder.readConfig(new Path(modelUri), conf);
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            ModelSchema.check(config, checkpoint);
        }
        Tokenizers.checked(modelUri, config.vocab_size);
        String adapterUri = adapter == null ? null : Paths.qualify(adapter, conf);
        String version = peftVersion.checked(adapterUri);
        MutedExperts muted = muteExperts == null ? MutedExperts.NONE : MutedExperts.parse(muteExperts);
        if (muteExperts != null && (adapterUri == null || baseline != null)) {
            throw new IllegalArgumentException(adapterUri == null ? "--mute-experts silences a μMoE adapter's experts; "
                    + "give the adapter with --adapter" : "--mute-experts compares with the unmuted adapter; drop "
                    + "--baseline");
        }
        if (adapterUri != null) {
            // reject a bad adapter (or a muted expert it does not have) before any task starts
            AdaptedModel.check(new Path(adapterUri), conf, config, version, muted);
        }
        int k = topK == null ? config.num_experts_per_tok : topK;
        if (config.num_experts > 0 && (k < 1 || k > config.num_experts)) {
            throw new IllegalArgumentException("--top-k must be in [1, " + config.num_experts + "] (the model's experts), got " + k);
        }
        EvalPlan plan = new EvalPlan(modelUri, data.files, data.textSplit(), window.window, k, batchWindows, 1,
                adapterUri, version, chosen);
        if (plan.window() > config.max_position_embeddings) {
            throw new IllegalArgumentException("--window " + plan.window() + " exceeds the model's "
                    + "max_position_embeddings " + config.max_position_embeddings);
        }
        if (out != null) {
            OutputFolder.requireFile("--out", new Path(Paths.qualify(out, conf)), conf, "eval", "JSON");
        }
        List<String> files = data.uris(conf);
        Set<String> names = new HashSet<>();
        for (String f : files) {
            if (!names.add(new Path(f).getName())) {
                throw new IllegalArgumentException("two --data files share the name " + new Path(f).getName()
                        + " (the report is keyed by file name)");
            }
        }
        return new EvalPlan(modelUri, files, plan.split(), plan.window(), k, batchWindows, 1, adapterUri, version,
                chosen, muted);
    }
}
