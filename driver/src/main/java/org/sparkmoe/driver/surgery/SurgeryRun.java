package org.sparkmoe.driver.surgery;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.model.CheckpointOptions;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.ExpertMap;
import org.sparkmoe.driver.MemoryPlan;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.LocalFiles;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.surgery.ExpertScores;
import org.sparkmoe.surgery.LayerResult;
import org.sparkmoe.surgery.LayerSurgery;
import org.sparkmoe.surgery.RoutingStats;
import org.sparkmoe.surgery.SurgeryCheckpoint;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.ParameterException;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The shared flow of a surgery subcommand: read and check the model (and statistics) on the driver, run the
 * surgery over the MoE layers as Spark tasks ({@link SurgeryJob}), then write the new checkpoint folder with
 * {@code surgery.json} (the options and per-layer numbers) and, when experts were regrouped, {@code expert-map.json}.
 */
final class SurgeryRun {
    static final String REPORT_FILE = "surgery.json";
    static final String EXPERT_MAP_FILE = "expert-map.json";

    final Configuration conf = new Configuration();
    final SurgeryOptions options;
    final Path modelDir;
    final Path outDir;
    final ModelConfig config;
    final int[] moeLayers;
    /** --layout (null: the input's), --max-shard-size, --dtype. */
    final CheckpointOptions output;
    /** Where the tasks stage their new tensors: a hidden sibling of --out, removed once the folder is written. */
    private final Path staging;

    SurgeryRun(SurgeryOptions options) {
        this.options = options;
        this.modelDir = new Path(options.model.uri(conf));
        this.outDir = new Path(Paths.qualify(options.out, conf));
        OutputFolder.requireCreatable("--out", outDir, conf);
        this.staging = new Path(outDir.getParent(), "." + outDir.getName() + ".pieces-" + java.util.UUID.randomUUID());
        this.config = ModelFolder.readConfig(modelDir, conf);
        this.output = options.checkpoint();
        if (config.num_experts == 0) {
            throw new IllegalArgumentException(modelDir + ": model_type " + config.modelType.name().toLowerCase()
                    + " has no experts to operate on");
        }
        if (config.hasLowRankExperts()) {
            throw new IllegalArgumentException(modelDir + " holds a shared base and rank-" + config.low_rank_experts_rank
                    + " experts (surgery lowrank); surgery works on full experts");
        }
        try (Checkpoint checkpoint = Checkpoint.open(modelDir, conf)) {
            ModelSchema.check(config, checkpoint);
        }
        this.moeLayers = CalibrationStats.moeLayerIndices(config);
        try {
            if (outDir.getFileSystem(conf).exists(outDir)) {
                throw new IllegalArgumentException("output checkpoint folder already exists: " + outDir);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + outDir + ": " + e.getMessage(), e);
        }
    }

    /** The --stats file parsed and checked against the model; {@code why} says which option needs it. */
    RoutingStats stats(String why) {
        return RoutingStats.parse(statsText(why, "router-stats.json", "router statistics"), statsFile().toString(),
                config, moeLayers.length);
    }

    /** The --stats file as calibrate's expert-scores.json, parsed and checked against the model (surgery prune). */
    ExpertScores expertScores() {
        return ExpertScores.parse(statsText("surgery prune", "expert-scores.json", "expert scores"),
                statsFile().toString(), config, moeLayers);
    }

    private Path statsFile() {
        return new Path(Paths.qualify(options.stats, conf));
    }

    /** The text of the --stats file, which {@code why} needs as calibrate's {@code name} ({@code what} it holds). */
    private String statsText(String why, String name, String what) {
        if (options.stats == null) {
            throw new IllegalArgumentException(why + " needs --stats (" + name + " from 'sparkmoe calibrate')");
        }
        Path file = statsFile();
        try {
            if (!file.getFileSystem(conf).exists(file)) {
                throw new IllegalArgumentException(what + " not found: " + file);
            }
            try (FSDataInputStream in = file.getFileSystem(conf).open(file)) {
                return new String(in.readAllBytes(), StandardCharsets.UTF_8);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + file + ": " + e.getMessage(), e);
        }
    }

    /**
     * Prints the memory plan of {@code surgery}'s tasks (see {@link MemoryPlan#surgery}) and refuses one that cannot
     * fit; true with --dry-run: the command stops here.
     */
    boolean planOnly(LayerSurgery surgery) {
        return planOnly(surgery, plan -> plan);
    }

    /** As {@link #planOnly(LayerSurgery)}, with {@code more} added to the plan (lowrank's distillation). */
    boolean planOnly(LayerSurgery surgery, java.util.function.UnaryOperator<MemoryPlan> more) {
        SparkLimits limits = SparkLimits.of(SparkContexts.conf("sparkmoe surgery", options.spark.master),
                options.spark.partitions);
        return options.dryRun.show(more.apply(MemoryPlan.surgery(MemoryPlan.mappedBytes(modelDir.toString(), conf),
                surgery.partBytes(config), limits)));
    }

    /** Statistics when --stats is given, else null. */
    RoutingStats statsIfGiven() {
        return options.stats == null ? null : stats("--stats");
    }

    /**
     * Runs {@code surgery} on Spark and writes the folder; {@code settings} go into surgery.json.
     *
     * @return the per-layer results, in MoE layer order
     */
    List<LayerResult> execute(String command, LayerSurgery surgery, ObjectNode settings) {
        return execute(command, surgery, settings, Map.of());
    }

    /** As {@link #execute(String, LayerSurgery, ObjectNode)}, with {@code overrides} replacing tensors the surgery made. */
    List<LayerResult> execute(String command, LayerSurgery surgery, ObjectNode settings, Map<String, INDArray> overrides) {
        return execute(command, surgery, settings, overrides, (sc, results, partitions, staging) -> results);
    }

    /** Further Spark work on the surgery's per-layer results, in the same application, before the folder is written. */
    interface Refinement {
        /**
         * @param staging where its tasks may stage tensors (a folder every executor can write and the driver read,
         *                removed once the folder is written; the surgery's own pieces are staged there too)
         */
        List<LayerResult> apply(JavaSparkContext sc, List<LayerResult> results, int partitions, Path staging);
    }

    /** As {@link #execute(String, LayerSurgery, ObjectNode, Map)}, with the results refined before writing. */
    List<LayerResult> execute(String command, LayerSurgery surgery, ObjectNode settings, Map<String, INDArray> overrides,
            Refinement refinement) {
        ObjectNode newConfig = surgery.config(config);
        List<LayerResult> results;
        try {
            try (JavaSparkContext sc = SparkContexts.start("sparkmoe surgery " + command, options.spark.master)) {
                results = refinement.apply(sc, compute(sc, surgery), partitions(sc), staging);
            }
            write(command, surgery, newConfig, settings, overrides, results);
        } finally {
            removeStaging();
        }
        for (int i = 0; i < results.size(); i++) {
            System.out.println("layer " + moeLayers[i] + "  " + describe(results.get(i), surgery.expertLists(i)));
        }
        return results;
    }

    /**
     * As {@link #execute(String, LayerSurgery, ObjectNode)}, on a SparkContext the caller owns (a pipeline's); the
     * caller reports the per-layer results.
     */
    List<LayerResult> execute(JavaSparkContext sc, String command, LayerSurgery surgery, ObjectNode settings) {
        ObjectNode newConfig = surgery.config(config);
        try {
            List<LayerResult> results = compute(sc, surgery);
            write(command, surgery, newConfig, settings, Map.of(), results);
            return results;
        } finally {
            removeStaging();
        }
    }

    private List<LayerResult> compute(JavaSparkContext sc, LayerSurgery surgery) {
        try {
            staging.getFileSystem(conf).mkdirs(staging);
        } catch (IOException e) {
            throw new UncheckedIOException("creating " + staging + " for the tasks' results: " + e.getMessage(), e);
        }
        return SurgeryJob.run(sc, modelDir.toString(), surgery, moeLayers, partitions(sc), staging);
    }

    /** Deletes the tasks' staged tensors (the driver's maps of them stay valid until it exits). */
    private void removeStaging() {
        try {
            staging.getFileSystem(conf).delete(staging, true);
        } catch (IOException e) {
            System.err.println("surgery: could not remove " + staging + ": " + e.getMessage());
        }
    }

    private int partitions(JavaSparkContext sc) {
        return options.spark.partitionsOr(sc.defaultParallelism());
    }

    private void write(String command, LayerSurgery surgery, ObjectNode newConfig, ObjectNode settings,
                       Map<String, INDArray> overrides, List<LayerResult> results) {
        Map<String, INDArray> replaced = new LinkedHashMap<>();
        results.forEach(r -> replaced.putAll(r.tensors()));
        replaced.putAll(overrides);
        Map<String, String> renamed = new LinkedHashMap<>();
        for (int i = 0; i < moeLayers.length; i++) {
            renamed.putAll(surgery.renamed(moeLayers[i], i));
        }
        Map<String, byte[]> extra = new LinkedHashMap<>();
        extra.put(REPORT_FILE, SurgeryCheckpoint.utf8(report(command, surgery, settings, results)));
        if (results.get(0).groups() != null) {
            int[][][] groups = results.stream().map(LayerResult::groups).toArray(int[][][]::new);
            int[] experts = new int[moeLayers.length];
            Arrays.fill(experts, config.num_experts);
            int[][] masked = new int[moeLayers.length][];
            for (int i = 0; i < masked.length; i++) {   // new expert g is the one whose group it heads
                int[] originals = surgery.expertLists(i).getOrDefault("masked", new int[0]);
                int[][] layer = groups[i];
                masked[i] = java.util.stream.IntStream.range(0, layer.length)
                        .filter(g -> Arrays.stream(originals).anyMatch(e -> e == layer[g][0])).toArray();
            }
            extra.put(EXPERT_MAP_FILE, SurgeryCheckpoint.utf8(ExpertMap.of(groups, masked, experts).toJson()));
        }
        SurgeryCheckpoint.write(modelDir, newConfig, replaced, renamed, extra, outDir, conf, output);
        System.err.println("surgery " + command + ": wrote " + outDir);
    }

    private static String describe(LayerResult r, Map<String, int[]> experts) {
        StringBuilder s = new StringBuilder();
        r.metrics().forEach((k, v) -> s.append(k).append(' ').append(String.format("%.6g", v)).append("  "));
        experts.forEach((k, v) -> s.append(k).append(' ').append(Arrays.toString(v)).append("  "));
        if (r.groups() != null) {
            s.append("groups ").append(Arrays.deepToString(r.groups()));
        }
        return s.toString().trim();
    }

    private String report(String command, LayerSurgery surgery, ObjectNode settings, List<LayerResult> results) {
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        root.put("command", command);
        root.put("model", modelDir.toString());
        root.set("settings", settings);
        ArrayNode layers = root.putArray("layers");
        for (int i = 0; i < results.size(); i++) {
            ObjectNode node = layers.addObject();
            node.put("layer", moeLayers[i]);
            results.get(i).metrics().forEach(node::put);
            surgery.expertLists(i).forEach((name, experts) -> {
                ArrayNode list = node.putArray(name);
                Arrays.stream(experts).forEach(list::add);
            });
            if (results.get(i).groups() != null) {
                ArrayNode groups = node.putArray("groups");
                for (int[] g : results.get(i).groups()) {
                    ArrayNode members = groups.addArray();
                    for (int e : g) {
                        members.add(e);
                    }
                }
            }
        }
        try {
            return json.writeValueAsString(root) + "\n";
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("serialising " + REPORT_FILE, e);
        }
    }

    /**
     * The retrained gates of --router FILE (retrain-router's router.safetensors), checked: one [E', D] gate per MoE
     * layer under its Hugging Face name (gpt-oss: and its [E'] bias), E' = {@code experts}.
     */
    Map<String, INDArray> gates(String router, int experts) {
        Path file = new Path(Paths.qualify(router, conf));
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        Map<String, INDArray> out = new LinkedHashMap<>();
        try {
            FileSystem fs = file.getFileSystem(conf);
            if (!fs.exists(file)) {
                throw new IllegalArgumentException("router file not found: " + file);
            }
            try (LocalFiles local = LocalFiles.of(fs, file.getParent());
                 SafeTensorsFile gates = SafeTensorsFile.open(local.get(file.getName()))) {
                for (int l : moeLayers) {
                    String name = layout.routerGate(l);
                    if (!gates.has(name)) {
                        throw new IllegalArgumentException(file + ": no tensor " + name);
                    }
                    INDArray gate = gates.readFloat(name);
                    if (gate.rank() != 2 || gate.size(0) != experts || gate.size(1) != config.hidden_size) {
                        throw new IllegalArgumentException(file + ": " + name + " is " + Arrays.toString(gate.shape())
                                + ", expected [" + experts + ", " + config.hidden_size + "]");
                    }
                    out.put(name, gate);
                    if (config.clamped_experts) {   // gpt-oss: the router's bias [E'] beside its weight
                        String bias = layout.routerBias(l);
                        if (!gates.has(bias)) {
                            throw new IllegalArgumentException(file + ": no tensor " + bias);
                        }
                        INDArray b = gates.readFloat(bias);
                        if (b.rank() != 1 || b.size(0) != experts) {
                            throw new IllegalArgumentException(file + ": " + bias + " is "
                                    + Arrays.toString(b.shape()) + ", expected [" + experts + "]");
                        }
                        out.put(bias, b);
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + file + ": " + e.getMessage(), e);
        }
        return out;
    }

    static ObjectNode settings() {
        return new ObjectMapper().createObjectNode();
    }

    /** Parses a choice flag's value (exit 2 when it is none of {@code choices}). */
    static <T> T choice(CommandSpec spec, String flag, String value, Map<String, T> choices) {
        T v = choices.get(value);
        if (v == null) {
            throw new ParameterException(spec.commandLine(), "Invalid value for option '" + flag
                    + "': '" + value + "' (expected one of " + String.join(", ", new java.util.TreeSet<>(choices.keySet())) + ")");
        }
        return v;
    }
}
