package org.sparkmoe.driver.router;

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
import org.sparkmoe.driver.CheckpointOutputOptions;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.ExpertMap;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkOptions;
import org.sparkmoe.driver.calib.RouterDataInfo;
import org.sparkmoe.driver.OutputFolder;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.surgery.OverlayTensors;
import picocli.CommandLine.Command;
import org.sparkmoe.driver.ModelOption;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Callable;

/** {@code sparkmoe retrain-router}: validates options, trains each MoE layer's router, writes the outputs. */
@Command(name = "retrain-router", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Fits new router (gate) weights from router data exported by 'calibrate --export-router-data', "
                + "with DL4J Spark (SparkDl4jMultiLayer + ParameterAveragingTrainingMaster).",
                "Per MoE layer: a linear router (D -> E'; with a bias for gpt_oss, whose router has one), softmax, "
                        + "cross-entropy to the teacher's routing "
                        + "distribution (summed over groups with --expert-map); for sigmoid routers (glm4_moe, "
                        + "deepseek_v3) sigmoid "
                        + "outputs and binary cross-entropy per expert to the teacher's sigmoid scores (no --expert-map); "
                        + "a router's e_score_correction_bias is kept as it is. Prints the score per epoch and the top-k "
                        + "set agreement with the teacher on the router data. Writes OUT/router.safetensors (the gate "
                        + "weights, and gpt_oss's router biases, under their Hugging Face names) and "
                        + "OUT/retrain-router.json; without --expert-map "
                        + "also a complete checkpoint folder in OUT (the model's files with the new gates).",
                "--partitions sets the DL4J workers (minibatch streams averaged together)."})
public final class RetrainRouterCommand implements Callable<Integer> {
    static final String GATES_FILE = "router.safetensors";
    static final String REPORT_FILE = "retrain-router.json";

    @Mixin
    ModelOption model;

    @Option(names = "--router-data", required = true, paramLabel = "DIR",
            description = "OUT/router-data of a calibrate --export-router-data run.")
    String routerData;

    @Option(names = "--expert-map", paramLabel = "FILE",
            description = "JSON {\"layers\": [{\"groups\": [[0,3],[1],...]}, ...]}: one entry per MoE layer, every expert "
                    + "in exactly one group; the router gets one output per group.")
    String expertMap;

    @Option(names = "--out", required = true, paramLabel = "DIR",
            description = "Output folder; must not exist yet (or be empty). It appears only once complete.")
    String out;

    @Option(names = "--epochs", defaultValue = "4", paramLabel = "N", description = "Passes over the data per layer. Default: ${DEFAULT-VALUE}.")
    int epochs;

    @Option(names = "--averaging-frequency", defaultValue = "5", paramLabel = "F",
            description = "Minibatches (one exported file each) per worker between parameter averagings. Default: ${DEFAULT-VALUE}.")
    int averagingFrequency;

    @Option(names = "--learning-rate", defaultValue = "0.003", paramLabel = "LR", description = "Adam learning rate. Default: ${DEFAULT-VALUE}.")
    double learningRate;

    @Option(names = "--seed", defaultValue = "42", paramLabel = "S",
            description = "Root seed; every layer's initialisation and data split derive from it. Default: ${DEFAULT-VALUE}.")
    long seed;

    @Mixin
    CheckpointOutputOptions output;

    @Mixin
    SparkOptions spark;

    @Override
    public Integer call() {
        Configuration conf = new Configuration();
        Path modelDir = new Path(model.uri(conf));
        ModelConfig config = ModelFolder.readConfig(modelDir, conf);
        RetrainPlan validated = plan(conf, config);
        OutputFolder.requireNew("--out", new Path(Paths.qualify(out, conf)), conf);
        int[] layers = validated.info().layers();
        List<RouterTrainer.Result> results = new ArrayList<>();
        RetrainPlan plan;
        try (JavaSparkContext sc = SparkContexts.start("sparkmoe retrain-router", spark.master)) {
            plan = new RetrainPlan(validated.routerData(), validated.info(), validated.expertMap(), validated.epochs(),
                    validated.averagingFrequency(), validated.learningRate(), validated.seed(),
                    spark.partitionsOr(sc.defaultParallelism()), validated.sigmoid(), validated.bias());
            Random layerSeeds = new Random(plan.seed());
            for (int l = 0; l < layers.length; l++) {
                RouterTrainer.Result r = RouterTrainer.train(sc, plan, l, layerSeeds.nextLong());
                System.out.printf("layer %-3d experts %-4d score %.6f   top-%d agreement %.4f (%d of %d tokens)%n",
                        layers[l], r.gate().size(0), r.score(), r.k(), r.agreement(), r.agreeing(), r.tokens());
                results.add(r);
            }
        }
        long agreeing = results.stream().mapToLong(RouterTrainer.Result::agreeing).sum();
        long tokens = results.stream().mapToLong(RouterTrainer.Result::tokens).sum();
        System.out.printf("all layers: top-k agreement %.4f (%d of %d layer-tokens)%n", (double) agreeing / tokens,
                agreeing, tokens);
        write(conf, config, modelDir, plan, results);
        return 0;
    }

    private RetrainPlan plan(Configuration conf, ModelConfig config) {
        if (epochs < 1) {
            throw new IllegalArgumentException("--epochs must be ≥ 1, got " + epochs);
        }
        if (averagingFrequency < 1) {
            throw new IllegalArgumentException("--averaging-frequency must be ≥ 1, got " + averagingFrequency);
        }
        if (!(learningRate > 0)) {
            throw new IllegalArgumentException("--learning-rate must be > 0, got " + learningRate);
        }
        String dataUri = Paths.qualify(routerData, conf);
        Path infoFile = new Path(dataUri, RouterDataInfo.FILE);
        if (!exists(infoFile, conf)) {
            throw new IllegalArgumentException("router data not found: " + infoFile
                    + " is missing (run calibrate --export-router-data)");
        }
        RouterDataInfo info = RouterDataInfo.parse(readText(infoFile, conf), infoFile.toString());
        int[] moeLayers = CalibrationStats.moeLayerIndices(config);
        if (info.experts() != config.num_experts || info.hiddenSize() != config.hidden_size
                || !Arrays.equals(info.layers(), moeLayers)) {
            throw new IllegalArgumentException(infoFile + " describes " + info.experts() + " experts, hidden size "
                    + info.hiddenSize() + ", MoE layers " + Arrays.toString(info.layers()) + "; the model has "
                    + config.num_experts + ", " + config.hidden_size + ", " + Arrays.toString(moeLayers));
        }
        int[] experts = new int[moeLayers.length];
        Arrays.fill(experts, config.num_experts);
        ExpertMap map = ExpertMap.identity(experts);
        if (expertMap != null) {
            Path mapFile = new Path(Paths.qualify(expertMap, conf));
            if (!exists(mapFile, conf)) {
                throw new IllegalArgumentException("expert map not found: " + mapFile);
            }
            map = ExpertMap.parse(readText(mapFile, conf), mapFile.toString(), experts);
            for (int l = 0; l < map.layers(); l++) {
                if (map.masked(l).length > 0) {
                    throw new IllegalArgumentException(mapFile + ": layers[" + l + "] masks new experts "
                            + Arrays.toString(map.masked(l)) + " (surgery prune --global): a retrained router would "
                            + "choose them; retrain after a per-layer prune (without --global)");
                }
            }
        }
        boolean sigmoid = config.routing.scoring_func().equals("sigmoid");
        if (sigmoid && expertMap != null) {
            throw new IllegalArgumentException("--expert-map is not supported for a sigmoid router (model_type "
                    + config.modelType.name().toLowerCase() + "): summed sigmoid scores are not a distribution");
        }
        return new RetrainPlan(dataUri, info, map, epochs, averagingFrequency, learningRate, seed, 1, sigmoid,
                config.clamped_experts);
    }

    private void write(Configuration conf, ModelConfig config, Path modelDir, RetrainPlan plan,
                       List<RouterTrainer.Result> results) {
        Path dir = new Path(Paths.qualify(out, conf));
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        LinkedHashMap<String, INDArray> gates = new LinkedHashMap<>();
        for (int l = 0; l < results.size(); l++) {
            gates.put(layout.routerGate(plan.info().layers()[l]), results.get(l).gate());
            if (results.get(l).bias() != null) {
                gates.put(layout.routerBias(plan.info().layers()[l]), results.get(l).bias());   // gpt-oss
            }
        }
        Map<String, byte[]> files = new LinkedHashMap<>();
        files.put(GATES_FILE, safetensorsBytes(gates, conf));
        files.put(REPORT_FILE, report(plan, results).getBytes(StandardCharsets.UTF_8));
        if (expertMap == null) {
            OutputFolder.makeRoom(dir, conf);
            try (Checkpoint checkpoint = Checkpoint.open(modelDir, conf)) {
                // the input's expert layout is kept
                CheckpointOptions options = output.with(null);
                ExpertLayout.Written written = ExpertLayout.of(checkpoint, config).apply(
                        new OverlayTensors(FusedExperts.perExpert(checkpoint, config), gates),
                        FusedExperts.perExpertNames(checkpoint.names(), checkpoint, config), config);
                CheckpointFolderWriter.write(modelDir, config.jsonCopy(), written.tensors(), written.names(), files,
                        dir, conf, options.maxShardBytes(), options.dtype());
            }
        } else {
            OutputFolder.write(dir, files, conf);
        }
        System.err.println("retrain-router: wrote " + GATES_FILE + ", " + REPORT_FILE
                + (expertMap == null ? " and a checkpoint with the new gates" : "") + " to " + dir);
    }

    /** The gates as the bytes of a safetensors file (small: E×D floats per MoE layer). */
    private static byte[] safetensorsBytes(LinkedHashMap<String, INDArray> gates, Configuration conf) {
        java.nio.file.Path tmp = null;
        try {
            tmp = java.nio.file.Files.createTempDirectory("sparkmoe-router");
            Path file = new Path(tmp.toUri().toString(), GATES_FILE);
            SafeTensorsWriter.write(FileSystem.getLocal(conf), file, gates, Map.of("format", "pt"));
            return java.nio.file.Files.readAllBytes(tmp.resolve(GATES_FILE));
        } catch (IOException e) {
            throw new UncheckedIOException("writing " + GATES_FILE + ": " + e.getMessage(), e);
        } finally {
            if (tmp != null) {
                try {
                    java.nio.file.Files.deleteIfExists(tmp.resolve(GATES_FILE));
                    java.nio.file.Files.deleteIfExists(tmp);
                } catch (IOException ignored) {
                    // a leftover temporary file is harmless
                }
            }
        }
    }

    private String report(RetrainPlan plan, List<RouterTrainer.Result> results) {
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        root.put("model", model.dir);
        root.put("router_data", plan.routerData());
        root.put("expert_map", expertMap);
        root.put("epochs", epochs);
        root.put("averaging_frequency", averagingFrequency);
        root.put("learning_rate", learningRate);
        root.put("seed", seed);
        ArrayNode layers = root.putArray("layers");
        long agreeing = 0;
        long tokens = 0;
        for (int l = 0; l < results.size(); l++) {
            RouterTrainer.Result r = results.get(l);
            ObjectNode node = layers.addObject();
            node.put("layer", plan.info().layers()[l]);
            node.put("experts", r.gate().size(0));
            node.put("top_k", r.k());
            node.put("score", r.score());
            ArrayNode scores = node.putArray("epoch_scores");
            for (double score : r.epochScores()) {
                scores.add(score);
            }
            node.put("agreement", r.agreement());
            node.put("tokens", r.tokens());
            agreeing += r.agreeing();
            tokens += r.tokens();
        }
        root.put("agreement", (double) agreeing / tokens);
        try {
            return json.writeValueAsString(root) + "\n";
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("serialising " + REPORT_FILE, e);
        }
    }

    private static boolean exists(Path p, Configuration conf) {
        try {
            return p.getFileSystem(conf).exists(p);
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + p + ": " + e.getMessage(), e);
        }
    }

    private static String readText(Path p, Configuration conf) {
        try (FSDataInputStream in = p.getFileSystem(conf).open(p)) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + p + ": " + e.getMessage(), e);
        }
    }
}
