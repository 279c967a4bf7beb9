package org.sparkmoe.driver.demo;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.sparkmoe.driver.DeviceOptions;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkOptions;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code sparkmoe demo}: validates options, runs {@link DemoPipeline} in one Spark application, writes the summary. */
@Command(name = "demo", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"The whole pipeline on a model and a folder of text files, in one Spark application:",
                "1. calibrate: router statistics, with the HTML report, over the first --max-tokens-per-file tokens of "
                        + "the valid split of every .txt file in --data;",
                "2. eval: perplexity of the model on the test split of every file, as 'sparkmoe eval' computes it;",
                "3. train: a LoRA on w1, w2 and w3 (rank 16, alpha 32, lr 3e-3, 4 windows per step and partition, "
                        + "averaging every step) on the valid split of --train-file, then eval with it;",
                "4. surgery topk --top-k M --rescale measured (none when norm_topk_prob is false) with the statistics "
                        + "of step 1, then eval of the new checkpoint.",
                "It ends with a table of perplexities (per file and all: base, LoRA and surgery, with the change "
                        + "relative to base), the seconds of each stage and the paths of everything it wrote.",
                "Under OUT: calibration/, eval-base.json, lora/ (with the adapter in lora/adapter), eval-lora.json, "
                        + "topkM/ (the new checkpoint), eval-topkM.json, summary.txt and summary.json.",
                "Relative paths resolve against the current directory; the defaults fit the repository root."})
public final class DemoCommand implements Callable<Integer> {
    @Option(names = "--model", defaultValue = "examples/models/mixtral-tiny", paramLabel = "DIR",
            description = "Hugging Face MoE model folder with full experts. Default: ${DEFAULT-VALUE}.")
    String model;

    @Option(names = "--data", defaultValue = "examples/corpus", paramLabel = "DIR",
            description = "Folder of UTF-8 text files; every *.txt in it is used, in name order. Default: ${DEFAULT-VALUE}.")
    String data;

    @Option(names = "--out", defaultValue = "out/demo", paramLabel = "DIR",
            description = "Output folder; it must not exist or be empty. Default: ${DEFAULT-VALUE}.")
    String out;

    @Option(names = "--train-file", defaultValue = "sysadmin.txt", paramLabel = "NAME",
            description = "The file in --data whose valid split the LoRA is trained on. Default: ${DEFAULT-VALUE}.")
    String trainFile;

    @Option(names = "--train-steps", defaultValue = "60", paramLabel = "N",
            description = "LoRA optimiser steps. Default: ${DEFAULT-VALUE}.")
    long trainSteps;

    @Option(names = "--max-tokens-per-file", defaultValue = "15000", paramLabel = "N",
            description = "Calibration uses the first ⌊N/S⌋·S tokens of each file's valid split. Default: ${DEFAULT-VALUE}.")
    int maxTokensPerFile;

    @Option(names = "--window", defaultValue = "256", paramLabel = "S",
            description = "Tokens per window, in every stage. Default: ${DEFAULT-VALUE}.")
    int window;

    @Option(names = "--top-k", defaultValue = "3", paramLabel = "M",
            description = "Experts per token after the surgery. Default: ${DEFAULT-VALUE}.")
    int topK;

    @Option(names = "--seed", defaultValue = "42", paramLabel = "N",
            description = "Root seed of the LoRA training. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Mixin
    SparkOptions spark;

    @Mixin
    DeviceOptions device;

    @Override
    public Integer call() {
        long start = System.nanoTime();
        Configuration conf = new Configuration();
        DemoPlan plan = plan(conf, device.resolve());
        requireEmptyOut(plan.out(), conf);
        Map<String, Double> seconds = new LinkedHashMap<>();
        DemoResult run;
        try (JavaSparkContext sc = SparkContexts.start("sparkmoe demo", spark.master)) {
            seconds.put("checks, start Spark", (System.nanoTime() - start) / 1e9);
            run = new DemoPipeline(sc, plan, conf, System.err, spark.partitionsOr(sc.defaultParallelism())).run();
        } catch (RuntimeException e) {
            System.err.println("demo: " + plan.out() + " holds the outputs of the stages that finished; remove it "
                    + "before running the demo again");
            throw e;
        }
        seconds.putAll(run.seconds());
        seconds.put("total", (System.nanoTime() - start) / 1e9);
        Map<String, String> outputs = new LinkedHashMap<>(run.outputs());
        String text = plan.child("summary.txt");
        String json = plan.child("summary.json");
        outputs.put("summary", text);
        outputs.put("summary (JSON)", json);
        DemoResult result = new DemoResult(run.base(), run.lora(), run.surgery(), run.alpha(), seconds, outputs);
        String summary = DemoSummary.text(plan, result);
        FileSystem fs = Paths.fileSystem(plan.out(), conf);
        AtomicFile.write(fs, new Path(text), summary.getBytes(StandardCharsets.UTF_8));
        AtomicFile.write(fs, new Path(json), DemoSummary.json(plan, result).getBytes(StandardCharsets.UTF_8));
        System.out.print(summary);
        return 0;
    }

    /** Validates everything that can be checked before Spark starts; nothing is written on failure. */
    private DemoPlan plan(Configuration conf, Device chosen) {
        String modelUri = Paths.qualify(model, conf);
        if (!exists(modelUri, conf)) {
            throw new IllegalArgumentException("model folder not found: " + modelUri + " (run from the repository "
                    + "root, or pass --model DIR)");
        }
        String dataUri = Paths.qualify(data, conf);
        List<String> files = textFiles(dataUri, conf);
        List<String> names = files.stream().map(f -> new Path(f).getName()).toList();
        files.forEach(f -> Paths.requireTextFile(f, conf));
        int train = names.indexOf(trainFile);
        if (train < 0) {
            throw new IllegalArgumentException("--train-file " + trainFile + " is not one of the .txt files in "
                    + dataUri + ": " + String.join(", ", names));
        }
        ModelConfig config = checkModel(modelUri, conf);
        if (window < 2 || window > config.max_position_embeddings) {
            throw new IllegalArgumentException("--window must be in [2, " + config.max_position_embeddings
                    + "] (the model's max_position_embeddings), got " + window);
        }
        if (maxTokensPerFile < window) {
            throw new IllegalArgumentException("--max-tokens-per-file must be ≥ --window (" + window + "), got "
                    + maxTokensPerFile);
        }
        if (trainSteps < 1) {
            throw new IllegalArgumentException("--train-steps must be ≥ 1, got " + trainSteps);
        }
        if (topK < 1 || topK > config.num_experts) {
            throw new IllegalArgumentException("--top-k must be in [1, " + config.num_experts
                    + "] (the model's experts), got " + topK);
        }
        return new DemoPlan(modelUri, config, files, files.get(train), window, maxTokensPerFile, trainSteps, topK, seed,
                Paths.qualify(out, conf), chosen);
    }

    /** An MoE model with full experts whose tensors match config.json. */
    private static ModelConfig checkModel(String modelUri, Configuration conf) {
        ModelConfig config = ModelFolder.readConfig(new Path(modelUri), conf);
        if (config.num_experts < 1) {
            throw new IllegalArgumentException(modelUri + " is a dense " + config.modelType
                    + " model; the demo needs an MoE model (mixtral, qwen2_moe, qwen3_moe, olmoe)");
        }
        if (config.hasLowRankExperts()) {
            throw new IllegalArgumentException(modelUri + " holds low-rank experts (surgery lowrank); the demo needs "
                    + "full experts");
        }
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            ModelSchema.check(config, checkpoint);
        }
        Tokenizers.checked(modelUri, config.vocab_size);
        return config;
    }

    /** The *.txt files of the folder, in name order. */
    private static List<String> textFiles(String dirUri, Configuration conf) {
        Path dir = new Path(dirUri);
        try {
            FileSystem fs = dir.getFileSystem(conf);
            if (!fs.exists(dir)) {
                throw new IllegalArgumentException("data folder not found: " + dirUri + " (run from the repository "
                        + "root, or pass --data DIR)");
            }
            if (!fs.getFileStatus(dir).isDirectory()) {
                throw new IllegalArgumentException("--data " + dirUri + " is not a folder (it takes a folder of .txt "
                        + "files)");
            }
            List<String> files = Arrays.stream(fs.listStatus(dir))
                    .filter(FileStatus::isFile)
                    .map(FileStatus::getPath)
                    .filter(p -> p.getName().endsWith(".txt"))
                    .map(Path::toString)
                    .sorted((a, b) -> new Path(a).getName().compareTo(new Path(b).getName()))
                    .toList();
            if (files.isEmpty()) {
                throw new IllegalArgumentException("no .txt files in --data " + dirUri);
            }
            return files;
        } catch (IOException e) {
            throw new UncheckedIOException("listing " + dirUri + ": " + e.getMessage(), e);
        }
    }

    /** Like train, the demo never writes over earlier outputs. */
    private static void requireEmptyOut(String outUri, Configuration conf) {
        Path dir = new Path(outUri);
        OutputFolder.requireCreatable("--out", dir, conf);
        try {
            FileSystem fs = dir.getFileSystem(conf);
            if (!fs.exists(dir)) {
                return;
            }
            if (!fs.getFileStatus(dir).isDirectory()) {
                throw new IllegalArgumentException("--out " + outUri + " is a file; the demo writes a folder");
            }
            if (fs.listStatus(dir).length > 0) {
                throw new IllegalArgumentException("--out " + outUri + " already holds files; choose another folder "
                        + "or remove it");
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + outUri + ": " + e.getMessage(), e);
        }
    }

    private static boolean exists(String uri, Configuration conf) {
        try {
            return Paths.fileSystem(uri, conf).exists(new Path(uri));
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + uri + ": " + e.getMessage(), e);
        }
    }
}
