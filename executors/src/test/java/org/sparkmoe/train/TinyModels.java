package org.sparkmoe.train;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.conf.Configuration;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Nd4jGroupedGemm;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelLoader;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.surgery.LayerSurgery;
import org.sparkmoe.surgery.LowRankCpSurgery;
import org.sparkmoe.surgery.LowRankSurgery;
import org.sparkmoe.surgery.LowRankTrSurgery;
import org.sparkmoe.surgery.MergeWeights;
import org.sparkmoe.surgery.OverlayTensors;

/**
 * The repository's tiny fixtures: examples/models/mixtral-tiny (4 layers, D 128, E 8, K 2, V 1024) and
 * tests/src/test/resources/reference/qwen2-moe-tiny (3 layers, layer 1 dense, shared expert, q/k/v biases,
 * norm_topk_prob false, V 64), tests/src/test/resources/reference/qwen3-moe-tiny (per-head q/k norms, head_dim 12,
 * q/k/v/o biases, layer 1 dense, tied embeddings), olmoe-tiny (whole-projection q/k norms, clip_qkv 1.5) and
 * glm4-moe-tiny (sigmoid grouped routing, ungated shared experts, first layer dense), loaded
 * once per JVM in FLOAT or DOUBLE.
 */
public final class TinyModels {
    public static final String MIXTRAL = "examples/models/mixtral-tiny";
    static final String QWEN = "tests/src/test/resources/reference/qwen2-moe-tiny";
    static final String QWEN3 = "tests/src/test/resources/reference/qwen3-moe-tiny";
    static final String OLMOE = "tests/src/test/resources/reference/olmoe-tiny";
    static final String GLM = "tests/src/test/resources/reference/glm4-moe-tiny";
    static final String GPT_OSS = "tests/src/test/resources/reference/gpt-oss-tiny";
    /** MLA without q_lora, softmax group_limited_greedy routing, 2 shared experts, layer 0 dense, YaRN. */
    static final String DEEPSEEK_V2 = "tests/src/test/resources/reference/deepseek-v2-tiny";
    /** MLA with q_lora, sigmoid noaux_tc routing with a correction bias, FP8 block-quantized weights, YaRN. */
    static final String DEEPSEEK_V3_FP8 = "tests/src/test/resources/reference/deepseek-v3-tiny-fp8";
    private static final Map<String, MoeTransformer> LOADED = new ConcurrentHashMap<>();

    private TinyModels() {
    }

    /** The model folder at {@code relative} (to the repository root). */
    public static org.apache.hadoop.fs.Path folder(String relative) {
        return new org.apache.hadoop.fs.Path(repoRoot().resolve(relative).toUri());
    }

    static MoeTransformer load(String relative, DataType dataType) {
        return LOADED.computeIfAbsent(relative + "@" + dataType, k -> {
            org.apache.hadoop.fs.Path dir = folder(relative);
            Configuration conf = new Configuration();
            try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
                return ModelLoader.load(ModelFolder.readConfig(dir, conf), checkpoint, new Nd4jGroupedGemm(), dataType);
            }
        });
    }

    /**
     * The tiny Mixtral converted by {@link LowRankSurgery} at rank R (mean base), loaded as a low-rank-expert model in
     * FLOAT or DOUBLE.
     */
    static MoeTransformer lowRankMixtral(int rank, DataType dataType) {
        return LOADED.computeIfAbsent(MIXTRAL + "@lowrank-" + rank + "@" + dataType, k -> {
            org.apache.hadoop.fs.Path dir = new org.apache.hadoop.fs.Path(repoRoot().resolve(MIXTRAL).toUri());
            Configuration conf = new Configuration();
            ModelConfig config = ModelFolder.readConfig(dir, conf);
            int[] layers = CalibrationStats.moeLayerIndices(config);
            double[][] weights = new double[layers.length][];
            Arrays.fill(weights, MergeWeights.uniform(config.num_experts));
            LowRankSurgery surgery = new LowRankSurgery(config, rank, weights);
            try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
                Map<String, INDArray> replaced = new LinkedHashMap<>();
                for (int i = 0; i < layers.length; i++) {
                    replaced.putAll(surgery.apply(checkpoint, layers[i], i).tensors());
                }
                ModelConfig low = ModelConfig.parse(surgery.config(config).toString(), "low-rank " + MIXTRAL);
                return ModelLoader.load(low, new OverlayTensors(checkpoint, replaced), new Nd4jGroupedGemm(), dataType);
            }
        });
    }

    /**
     * The tiny Mixtral converted by {@link LowRankCpSurgery} at rank R (3 ALS sweeps, seed 5), loaded as a model of
     * CP-form experts in FLOAT or DOUBLE.
     */
    static MoeTransformer cpMixtral(int rank, DataType dataType) {
        return LOADED.computeIfAbsent(MIXTRAL + "@cp-" + rank + "@" + dataType, k -> {
            ModelConfig config = ModelFolder.readConfig(folder(MIXTRAL), new Configuration());
            LowRankCpSurgery surgery = new LowRankCpSurgery(config, rank, 3, 0.0, 5);
            return converted(config, surgery, surgery.config(config), dataType);
        });
    }

    /**
     * The tiny Mixtral converted by {@link LowRankTrSurgery} at ring ranks (R, R, R) (3 ALS sweeps, seed 5), loaded as a
     * model of TR-form experts in FLOAT or DOUBLE.
     */
    static MoeTransformer trMixtral(int rank, DataType dataType) {
        return LOADED.computeIfAbsent(MIXTRAL + "@tr-" + rank + "@" + dataType, k -> {
            ModelConfig config = ModelFolder.readConfig(folder(MIXTRAL), new Configuration());
            LowRankTrSurgery surgery = new LowRankTrSurgery(config, rank, 3, 0.0, 5);
            return converted(config, surgery, surgery.config(config), dataType);
        });
    }

    /** The tiny Mixtral with every MoE layer replaced by {@code surgery}'s parts, under its config.json. */
    private static MoeTransformer converted(ModelConfig config, LayerSurgery surgery, ObjectNode json,
            DataType dataType) {
        int[] layers = CalibrationStats.moeLayerIndices(config);
        try (Checkpoint checkpoint = Checkpoint.open(folder(MIXTRAL), new Configuration())) {
            Map<String, INDArray> replaced = new LinkedHashMap<>();
            for (int i = 0; i < layers.length; i++) {
                for (int part = 0; part < surgery.parts(); part++) {
                    replaced.putAll(surgery.applyPart(checkpoint, layers[i], i, part).tensors());
                }
            }
            ModelConfig low = ModelConfig.parse(json.toString(), "converted " + MIXTRAL);
            return ModelLoader.load(low, new OverlayTensors(checkpoint, replaced), new Nd4jGroupedGemm(), dataType);
        }
    }

    /**
     * The tiny Mixtral with config.json's router_jitter_noise (0 in the fixture) set to {@code jitter}, loaded in
     * {@code dataType}: training multiplies every router input by seeded uniform noise.
     */
    static MoeTransformer jitteredMixtral(double jitter, DataType dataType) {
        return LOADED.computeIfAbsent(MIXTRAL + "@jitter-" + jitter + "@" + dataType, k -> {
            org.apache.hadoop.fs.Path dir = folder(MIXTRAL);
            try {
                String json = Files.readString(repoRoot().resolve(MIXTRAL).resolve("config.json"));
                String jittered = json.replace("\"router_jitter_noise\": 0.0", "\"router_jitter_noise\": " + jitter);
                if (jittered.equals(json)) {
                    throw new IllegalStateException(MIXTRAL + "/config.json no longer sets router_jitter_noise 0.0");
                }
                try (Checkpoint checkpoint = Checkpoint.open(dir, new Configuration())) {
                    return ModelLoader.load(ModelConfig.parse(jittered, "jittered " + MIXTRAL), checkpoint,
                            new Nd4jGroupedGemm(), dataType);
                }
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
    }

    /** B windows of S token ids drawn uniformly from the vocabulary with a seeded generator. */
    static int[][] windows(MoeTransformer model, int batch, int seq, long seed) {
        Random rnd = new Random(seed);
        int[][] w = new int[batch][seq];
        for (int[] row : w) {
            for (int s = 0; s < seq; s++) {
                row[s] = rnd.nextInt(model.config().vocab_size);
            }
        }
        return w;
    }

    /** The first ancestor of the working directory that holds examples/models/mixtral-tiny. */
    private static Path repoRoot() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve(MIXTRAL))) {
                return p;
            }
        }
        throw new IllegalStateException("no ancestor of " + Path.of("").toAbsolutePath() + " holds " + MIXTRAL);
    }
}
