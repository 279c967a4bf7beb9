package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.model.ModelFolder;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.sparkmoe.tests.FixtureCommands.*;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * The commands on the tiny deepseek_v2, deepseek_v3 and FP8 deepseek_v3 fixtures (see {@link DeepseekParityTest}),
 * end to end through the command line, as {@link NewModelTypesCommandsTest} does for qwen3_moe and olmoe: calibrate,
 * eval, surgery topk, reduce (groups and correction bias kept consistent), merge-dense (exact on identical experts)
 * and lowrank (shared experts and correction bias kept), each output evaluated; retrain-router with the correction bias frozen; train with
 * LoRA on the routed experts and the router trainable (the correction bias stays as it was), merge of its adapter,
 * and synth of DeepSeek-V2-Lite's shapes.
 */
class DeepseekCommandsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Configuration CONF = new Configuration();

    @ParameterizedTest
    @ValueSource(strings = {"deepseek-v2-tiny", "deepseek-v3-tiny", "deepseek-v3-tiny-fp8"})
    void calibrateAndEverySurgeryRunAndTheirOutputsEvaluate(String name, @TempDir Path tmp) throws Exception {
        Path m = model(name);
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
        JsonNode stats = FixtureCommands.calibrate(m, config, tmp);
        Path calib = tmp.resolve("calib");
        // V3's correction bias and both types' expert groups are reported: every token keeps topk_group groups
        for (JsonNode layer : stats.get("layers")) {
            assertEquals(config.routing.scoreCorrectionBias(), layer.has("bias"), layer.toString());
            assertEquals(config.routing.groupLimited(), layer.has("groups"), layer.toString());
            if (layer.has("groups")) {
                long kept = 0;
                for (JsonNode g : layer.get("groups").get("kept")) {
                    kept += g.asLong();
                }
                assertEquals(layer.get("tokens").asLong() * config.routing.topk_group(), kept, name);
            }
        }
        String statsFile = calib.resolve("router-stats.json").toString();
        ppl(m, tmp);

        Path topk = tmp.resolve("topk");
        ok("surgery", "topk", "--top-k", "1", "--rescale", config.norm_topk_prob ? "measured" : "none", "--model",
                m.toString(), "--out", topk.toString(), "--stats", statsFile, "--master", "local[2]");
        assertEquals(1, ModelFolder.readConfig(hadoop(topk), CONF).num_experts_per_tok);
        if (config.modelType == ModelConfig.ModelType.DEEPSEEK_V3) {
            assertEquals(0, JSON.readTree(topk.resolve("config.json").toFile()).get("num_nextn_predict_layers").asInt(),
                    "surgery writes the main model only: no multi-token-prediction layer");
        }
        ppl(topk, tmp);

        reduceKeepsTheGroupsAndTheCorrectionBias(m, config, statsFile, tmp);

        // every layer dense: first_k_dense_replace = L, each MLP [merged routed; shared; zero padding]
        Path dense = tmp.resolve("dense");
        ok("surgery", "merge-dense", "--method", "router-weighted", "--model", m.toString(), "--out", dense.toString(),
                "--stats", statsFile, "--master", "local[2]");
        ModelConfig merged = ModelFolder.readConfig(hadoop(dense), CONF);
        assertEquals(config.modelType, merged.modelType);
        assertEquals(config.num_hidden_layers, merged.first_k_dense_replace);
        for (int l = 0; l < config.num_hidden_layers; l++) {
            assertTrue(!merged.isMoeLayer(l), "layer " + l + " dense");
        }
        int routedAndShared = config.expert_intermediate_size + config.shared_expert_intermediate_size;
        INDArray down = tensor(dense, CheckpointLayout.denseMlp(2, Projection.DOWN));              // [D, intermediate]
        assertArrayEquals(tensor(m, new CheckpointLayout(config.modelType).sharedExpert(2, Projection.DOWN))
                .data().asFloat(), down.get(NDArrayIndex.all(), NDArrayIndex.interval(config.expert_intermediate_size,
                routedAndShared)).dup('c').data().asFloat(), "the shared experts' units, as they were");
        if (routedAndShared < config.intermediate_size) {
            assertEquals(0.0, down.get(NDArrayIndex.all(), NDArrayIndex.interval(routedAndShared,
                    config.intermediate_size)).amaxNumber().doubleValue(), "zero padding");
        }
        ppl(dense, tmp);

        // at full rank (min of hidden 32 and expert width 16) the SVD is exact: every relative error is float32
        // rounding; the model still differs from the original, since low-rank experts mix weights, not outputs; the
        // shared experts and (V3) the correction bias are kept beside them
        Path lowrank = tmp.resolve("lowrank");
        ok("surgery", "lowrank", "--rank", "16", "--model", m.toString(), "--out", lowrank.toString(),
                "--master", "local[2]");
        ModelConfig lowRanked = ModelFolder.readConfig(hadoop(lowrank), CONF);
        assertEquals(config.modelType, lowRanked.modelType);
        assertEquals(16, lowRanked.low_rank_experts_rank);
        for (JsonNode layer : JSON.readTree(lowrank.resolve("surgery.json").toFile()).get("layers")) {
            for (String proj : List.of("gate_proj", "up_proj", "down_proj")) {
                double error = layer.get(proj + "_rel_error").asDouble();
                assertTrue(error < 1e-6, name + " layer " + layer.get("layer") + " " + proj + ": " + error);
            }
        }
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        assertTensorEquals(m, lowrank, layout.sharedExpert(1, Projection.UP));
        if (config.routing.scoreCorrectionBias()) {
            assertTensorEquals(m, lowrank, layout.scoreCorrectionBias(1));
        }
        ppl(lowrank, tmp);
    }

    /**
     * reduce to 4 experts: deepseek-v2-tiny (group_limited_greedy, n_group 4, topk_group 2: groups ranked by their best
     * score) keeps one expert per group; deepseek-v3's noaux_tc ranks groups by their two best scores, so 4 experts in
     * its 4 groups are refused in one line, and a copy regrouped into n_group 2 (topk_group 1) reduces to 2 per group.
     * Every merged expert stays in its group, and its correction-bias entry is its members' mean (--by weights without
     * statistics: uniform).
     */
    private static void reduceKeepsTheGroupsAndTheCorrectionBias(Path m, ModelConfig config, String statsFile, Path tmp)
            throws Exception {
        Path source = m;
        List<String> how = List.of("--by", "routing", "--stats", statsFile);
        if (config.routing.groupRankTop2Sum()) {
            CliRun refused = sparkmoe("surgery", "reduce", "--experts", "4", "--by", "routing", "--model", m.toString(),
                    "--out", tmp.resolve("reduce-refused").toString(), "--stats", statsFile);
            assertEquals(1, refused.exitCode());
            assertTrue(refused.err().contains("--experts 4 does not keep the expert groups: it must be a multiple of "
                    + "n_group 4 with at least 2 experts per group"), refused.err());
            source = variant(m, tmp.resolve("two-groups"), json -> json.put("n_group", 2).put("topk_group", 1), false);
            how = List.of("--by", "weights");
        }
        ModelConfig before = ModelFolder.readConfig(hadoop(source), CONF);
        Path reduce = tmp.resolve("reduce");
        List<String> args = new ArrayList<>(List.of("surgery", "reduce", "--experts", "4", "--model", source.toString(),
                "--out", reduce.toString(), "--master", "local[2]"));
        args.addAll(how);
        ok(args.toArray(new String[0]));
        ModelConfig reduced = ModelFolder.readConfig(hadoop(reduce), CONF);
        assertEquals(4, reduced.num_experts);
        assertEquals(before.routing.n_group(), reduced.routing.n_group());
        assertEquals(before.routing.topk_group(), reduced.routing.topk_group());
        int perGroup = before.num_experts / before.routing.n_group();
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        JsonNode layers = JSON.readTree(reduce.resolve("expert-map.json").toFile()).get("layers");
        int moeLayer = 0;
        for (int l = 0; l < config.num_hidden_layers; l++) {
            if (!config.isMoeLayer(l)) {
                continue;
            }
            JsonNode groups = layers.get(moeLayer++).get("groups");
            assertEquals(4, groups.size());
            float[] bias = config.routing.scoreCorrectionBias()
                    ? tensor(source, layout.scoreCorrectionBias(l)).data().asFloat() : null;
            float[] newBias = bias == null ? null : tensor(reduce, layout.scoreCorrectionBias(l)).data().asFloat();
            for (int g = 0; g < 4; g++) {
                double mean = 0;
                for (JsonNode e : groups.get(g)) {
                    assertEquals(g / (4 / before.routing.n_group()), e.asInt() / perGroup,
                            "layer " + l + ": merged expert " + g + " holds expert " + e + " of another group");
                    mean += bias == null ? 0 : bias[e.asInt()] / (double) groups.get(g).size();
                }
                if (bias != null) {
                    assertEquals(mean, newBias[g], 1e-6, "layer " + l + ": correction bias of merged expert " + g);
                }
            }
            assertTensorEquals(source, reduce, layout.sharedExpert(l, Projection.GATE));
        }
        ppl(reduce, tmp);
    }

    /**
     * merge-dense is exact when every expert of a layer is the same expert W and the routing weights of a token always
     * sum to the same c: the MoE layer is shared(x) + c·W(x), which the folded MLP [W; shared] with down [c·W_down,
     * shared_down] computes. deepseek-v3-tiny renormalises its top-2 sigmoid weights (c = routed_scaling_factor 2.5);
     * deepseek-v2-tiny does not, so its copy routes greedily to all 8 experts (softmax weights summing to 1, c = 1.5).
     * The perplexity of the merged model equals that of the model it came from (1e-4 relative: float32 sums in
     * another order).
     */
    @ParameterizedTest
    @ValueSource(strings = {"deepseek-v2-tiny", "deepseek-v3-tiny"})
    void mergeDenseOfIdenticalExpertsIsExact(String name, @TempDir Path tmp) throws Exception {
        boolean v2 = name.equals("deepseek-v2-tiny");
        Path m = variant(model(name), tmp.resolve("same-experts"), json -> {
            if (v2) {
                json.put("topk_method", "greedy").put("n_group", 1).put("topk_group", 1).put("num_experts_per_tok", 8);
            }
        }, true);
        double before = ppl(m, tmp);
        Path dense = tmp.resolve("dense");
        ok("surgery", "merge-dense", "--method", "uniform", "--model", m.toString(), "--out", dense.toString(),
                "--master", "local[2]");
        double after = ppl(dense, tmp);
        assertEquals(before, after, 1e-4 * before, name + ": perplexity before and after merge-dense");
    }

    /**
     * retrain-router on DeepSeek: V2's softmax router by cross-entropy, V3's sigmoid router by binary cross-entropy to
     * the teacher's sigmoid scores (as glm4_moe); the gate weights move, the correction bias stays as it was, and the
     * checkpoint evaluates.
     */
    @ParameterizedTest
    @ValueSource(strings = {"deepseek-v2-tiny", "deepseek-v3-tiny"})
    void retrainRouterKeepsTheCorrectionBias(String name, @TempDir Path tmp) throws Exception {
        Path m = model(name);
        Path calib = tmp.resolve("calib");
        ok("calibrate", "--model", m.toString(), "--data", Fixtures.corpus("sysadmin.txt") + ","
                + Fixtures.corpus("scripture.txt"), "--window", "64", "--max-tokens-per-file", "512",
                "--export-router-data", "--master", "local[2]", "--out", calib.toString());
        Path out = tmp.resolve("router");
        ok("retrain-router", "--model", m.toString(), "--router-data", calib.resolve("router-data").toString(),
                "--epochs", "2", "--out", out.toString(), "--master", "local[2]");
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        for (int l = 1; l < config.num_hidden_layers; l++) {
            assertTrue(!Arrays.equals(tensor(m, layout.routerGate(l)).data().asFloat(),
                    tensor(out, layout.routerGate(l)).data().asFloat()), "the router of layer " + l + " was retrained");
            if (config.routing.scoreCorrectionBias()) {
                assertTensorEquals(m, out, layout.scoreCorrectionBias(l));
            }
        }
        ppl(out, tmp);
    }

    /**
     * A copy of fixture {@code from} in {@code dir}: config.json edited by {@code edit}; with {@code sameExperts} every
     * expert of each MoE layer replaced by expert 0 (written as float32), else the same model.safetensors.
     */
    private static Path variant(Path from, Path dir, Consumer<ObjectNode> edit, boolean sameExperts)
            throws Exception {
        Files.createDirectories(dir);
        ObjectNode json = (ObjectNode) JSON.readTree(from.resolve("config.json").toFile());
        edit.accept(json);
        Files.writeString(dir.resolve("config.json"), json.toString());
        Files.copy(from.resolve("tokenizer.json"), dir.resolve("tokenizer.json"));
        if (!sameExperts) {
            Files.copy(from.resolve("model.safetensors"), dir.resolve("model.safetensors"));
            return dir;
        }
        Pattern expert = Pattern.compile("(model\\.layers\\.\\d+\\.mlp\\.experts\\.)\\d+(\\..*)");
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        try (Checkpoint source = Checkpoint.open(hadoop(from), CONF)) {
            for (String name : source.names()) {
                Matcher e = expert.matcher(name);
                tensors.put(name, source.readFloat(e.matches() ? e.group(1) + "0" + e.group(2) : name));
            }
        }
        SafeTensorsWriter.write(FileSystem.getLocal(CONF), hadoop(dir.resolve("model.safetensors")), tensors,
                Map.of("format", "pt"));
        return dir;
    }

    /** {@code logits} on the reference input ids writes transformers' logits and router logits (≤ 2e-4). */
    @ParameterizedTest
    @ValueSource(strings = {"deepseek-v2-tiny", "deepseek-v3-tiny", "deepseek-v3-tiny-fp8"})
    void logitsCommandWritesTransformersLogits(String name, @TempDir Path tmp) {
        Path reference = model(name + "-reference.safetensors");
        Path out = tmp.resolve("logits.safetensors");
        ok("logits", "--model", model(name).toString(), "--input-ids", reference.toString(), "--out", out.toString());
        try (SafeTensorsFile ref = SafeTensorsFile.open(reference); SafeTensorsFile ours = SafeTensorsFile.open(out)) {
            for (String key : List.of("logits", "router_logits.0", "router_logits.1")) {
                double worst = ref.readFloat(key).sub(ours.readFloat(key).reshape(ref.info(key).shape()))
                        .amaxNumber().doubleValue();
                assertTrue(worst <= 2e-4, name + " " + key + ": max |Δ| " + worst);
            }
        }
    }

    /**
     * DeepSeek-V2-Lite's real shapes, 2 layers (one dense, one MoE of 64 experts of 1408): synth writes them in bf16
     * and eval scores a few windows (random weights: perplexity near the vocabulary size).
     */
    @org.junit.jupiter.api.Test
    void synthOfDeepSeekV2LiteEvaluates(@TempDir Path tmp) throws Exception {
        Path m = tmp.resolve("v2-lite-2");
        ok("synth", "--shape", "deepseek-v2-lite", "--layers", "2", "--out", m.toString());
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
        assertEquals(ModelConfig.ModelType.DEEPSEEK_V2, config.modelType);
        assertTrue(!config.isMoeLayer(0) && config.isMoeLayer(1));
        String text = Files.readString(Fixtures.corpus("sysadmin.txt"));
        Path sample = Files.writeString(tmp.resolve("sysadmin-head.txt"),
                text.substring(0, text.lastIndexOf('\n', 1500) + 1));
        Path report = tmp.resolve("eval.json");
        ok("eval", "--model", m.toString(), "--data", sample.toString(), "--split", "all", "--window", "64",
                "--master", "local[1]", "--out", report.toString());
        double ppl = JSON.readTree(report.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1000 && ppl < 1e6, "perplexity " + ppl);
    }

    @ParameterizedTest
    @ValueSource(strings = {"deepseek-v2-tiny", "deepseek-v3-tiny", "deepseek-v3-tiny-fp8"})
    void trainLowersTheLossWithTheCorrectionBiasFrozen(String name, @TempDir Path tmp) throws Exception {
        Path m = model(name);
        Path out = tmp.resolve("train");
        ok("train", "--model", m.toString(), "--data", Fixtures.sysadminExcerpt(tmp).toString(), "--window", "32",
                "--steps", "24", "--batch-windows", "4", "--lr", "2e-2", "--rank", "4", "--alpha", "8",
                "--targets", "gate_proj,up_proj,down_proj", "--train-router", "--checkpoint-every", "100",
                "--master", "local[2]", "--out", out.toString());
        List<String> log = Files.readAllLines(out.resolve("train-log.jsonl"));
        double first = JSON.readTree(log.get(0)).get("loss").asDouble();
        double last = JSON.readTree(log.get(log.size() - 1)).get("loss").asDouble();
        System.out.printf("%s: train loss %.4f → %.4f over %d rounds%n", name, first, last, log.size());
        assertTrue(last < first, name + ": loss " + first + " → " + last);
        Path mergedDir = tmp.resolve("merged");
        ok("merge", "--model", m.toString(), "--adapter", out.resolve("adapter").toString(), "--out",
                mergedDir.toString());
        ppl(mergedDir, tmp);
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
        if (config.routing.scoreCorrectionBias()) {
            String bias = "model.layers.1.mlp.gate.e_score_correction_bias";
            try (Checkpoint a = Checkpoint.open(hadoop(m), CONF); Checkpoint b = Checkpoint.open(hadoop(mergedDir),
                    CONF)) {
                assertArrayEquals(a.readFloat(bias).data().asFloat(), b.readFloat(bias).data().asFloat(),
                        "the correction bias is frozen");
            }
        }
    }
}
