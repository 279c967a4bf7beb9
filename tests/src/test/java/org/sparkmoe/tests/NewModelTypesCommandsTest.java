package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ModelFolder;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.sparkmoe.tests.FixtureCommands.*;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * The commands on the tiny qwen3_moe and olmoe fixtures (see {@link Qwen3OlmoeParityTest}), end to end through the
 * command line: calibrate; surgery topk, reduce, merge-dense and lowrank, each output loading in eval; train lowering the
 * training loss and writing an adapter that merge accepts, with PEFT keys under {@code mlp.experts.<e>.<proj>}; with
 * LoRA on the shared expert too (glm4_moe, qwen2_moe), logits with the adapter equal logits of its merge.
 */
class NewModelTypesCommandsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Configuration CONF = new Configuration();

    @ParameterizedTest
    @ValueSource(strings = {"qwen3-moe-tiny", "olmoe-tiny", "glm4-moe-tiny"})
    void calibrateAndEverySurgeryRunAndTheirOutputsEvaluate(String name, @TempDir Path tmp) throws Exception {
        Path m = model(name);
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
        JsonNode stats = FixtureCommands.calibrate(m, config, tmp);
        Path calib = tmp.resolve("calib");
        if (config.modelType == ModelConfig.ModelType.GLM4_MOE) {
            // the sigmoid router's correction bias and expert groups are reported, in the JSON and the page
            JsonNode layer = stats.get("layers").get(0);
            long tokens = layer.get("tokens").asLong();
            assertTrue(layer.get("bias").get("changed_tokens").asLong() > 0, layer.get("bias").toString());
            long scores = 0;
            for (JsonNode bin : layer.get("bias").get("score_histogram")) {
                scores += bin.asLong();
            }
            assertEquals(tokens * config.num_experts, scores, "every (token, expert) score binned");
            long kept = 0;
            for (JsonNode g : layer.get("groups").get("kept")) {
                kept += g.asLong();
            }
            assertEquals(tokens, kept, "topk_group 1: one group kept per token");
            String page = Files.readString(calib.resolve("report.html"));
            assertTrue(page.contains("Correction bias") && page.contains("Expert groups"), "report sections");
        } else {
            assertTrue(!stats.get("layers").get(0).has("bias") && !stats.get("layers").get(0).has("groups"));
        }
        String statsFile = calib.resolve("router-stats.json").toString();
        ppl(m, tmp);

        Path topk = tmp.resolve("topk");
        ok("surgery", "topk", "--top-k", "1", "--rescale", config.norm_topk_prob ? "measured" : "none", "--model",
                m.toString(), "--out", topk.toString(), "--stats", statsFile, "--master", "local[2]");
        assertEquals(1, ModelFolder.readConfig(hadoop(topk), CONF).num_experts_per_tok);
        ppl(topk, tmp);

        // glm4-moe-tiny's 8 experts sit in n_group 2 groups: 4 keeps 2 per group, 3 is refused
        boolean glm = config.modelType == ModelConfig.ModelType.GLM4_MOE;
        int fewer = glm ? 4 : 3;
        Path reduce = tmp.resolve("reduce");
        ok("surgery", "reduce", "--experts", String.valueOf(fewer), "--by", "routing", "--model", m.toString(), "--out",
                reduce.toString(), "--stats", statsFile, "--master", "local[2]");
        ModelConfig reduced = ModelFolder.readConfig(hadoop(reduce), CONF);
        assertEquals(fewer, reduced.num_experts);
        assertEquals(config.modelType, reduced.modelType);
        if (glm) {
            assertArrayEquals(new long[] {fewer}, tensor(reduce, "model.layers.1.mlp.gate.e_score_correction_bias")
                    .shape(), "the correction bias merged with its experts");
            assertTensorEquals(m, reduce, new CheckpointLayout(config.modelType).sharedExpert(2, Projection.DOWN));
            CliRun refused = sparkmoe("surgery", "reduce", "--experts", "3", "--by", "routing", "--model",
                    m.toString(), "--out", tmp.resolve("reduce3").toString(), "--stats", statsFile);
            assertEquals(1, refused.exitCode());
            assertTrue(refused.err().contains("--experts 3 does not keep the expert groups: it must be a multiple of "
                    + "n_group 2"), refused.err());
        }
        ppl(reduce, tmp);

        Path dense = tmp.resolve("dense");
        ok("surgery", "merge-dense", "--method", "router-weighted", "--model", m.toString(), "--out",
                dense.toString(), "--stats", statsFile, "--master", "local[2]");
        ModelConfig merged = ModelFolder.readConfig(hadoop(dense), CONF);
        if (config.modelType == ModelConfig.ModelType.QWEN3_MOE) {
            assertEquals(ModelConfig.ModelType.QWEN3, merged.modelType);
            assertEquals(config.head_dim, merged.head_dim);
            assertEquals(config.intermediate_size, merged.intermediate_size, "padded to the dense layer's width");
            assertTensorEquals(m, dense, CheckpointLayout.attentionNorm(0, 'q'));
            assertTensorEquals(m, dense, CheckpointLayout.attentionNorm(2, 'k'));
            assertTensorEquals(m, dense, CheckpointLayout.denseMlp(1, Projection.UP));
            INDArray up = tensor(dense, CheckpointLayout.denseMlp(0, Projection.UP)); // [48, 32], rows 16.. zero
            assertEquals(0.0, up.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(config.expert_intermediate_size,
                    config.intermediate_size), org.nd4j.linalg.indexing.NDArrayIndex.all()).amaxNumber().doubleValue());
        } else if (glm) {
            assertEquals(ModelConfig.ModelType.GLM4_MOE, merged.modelType);
            assertEquals(config.num_hidden_layers, merged.first_k_dense_replace);
            assertTrue(!merged.isMoeLayer(1) && !merged.isMoeLayer(2), "every layer dense");
            // [merged routed (16 units); shared (16 units); zero padding up to intermediate_size 48]
            INDArray down = tensor(dense, CheckpointLayout.denseMlp(2, Projection.DOWN));   // [32, 48]
            assertArrayEquals(tensor(m, new CheckpointLayout(config.modelType).sharedExpert(2, Projection.DOWN))
                    .data().asFloat(), down.get(org.nd4j.linalg.indexing.NDArrayIndex.all(),
                    org.nd4j.linalg.indexing.NDArrayIndex.interval(16, 32)).dup('c').data().asFloat());
            assertEquals(0.0, down.get(org.nd4j.linalg.indexing.NDArrayIndex.all(),
                    org.nd4j.linalg.indexing.NDArrayIndex.interval(32, 48)).amaxNumber().doubleValue());
        } else {
            assertEquals(ModelConfig.ModelType.OLMOE, merged.modelType);
            assertEquals(1, merged.num_experts);
            assertEquals(1, merged.num_experts_per_tok);
            assertTensorEquals(m, dense, CheckpointLayout.attentionNorm(1, 'q'));
        }
        ppl(dense, tmp);

        // at full rank (min of hidden 32 and expert width 16) the SVD is exact: every relative error is float32
        // rounding; the model still differs from the original, since low-rank experts mix weights, not outputs
        Path lowrank = tmp.resolve("lowrank");
        ok("surgery", "lowrank", "--rank", "16", "--model", m.toString(), "--out", lowrank.toString(),
                "--master", "local[2]");
        ModelConfig lowRanked = ModelFolder.readConfig(hadoop(lowrank), CONF);
        assertEquals(config.modelType, lowRanked.modelType);
        assertEquals(16, lowRanked.low_rank_experts_rank);
        JsonNode layers = JSON.readTree(lowrank.resolve("surgery.json").toFile()).get("layers");
        assertEquals(config.num_hidden_layers - config.mlp_only_layers.size(), layers.size());
        for (JsonNode layer : layers) {
            for (String proj : List.of("gate_proj", "up_proj", "down_proj")) {
                double error = layer.get(proj + "_rel_error").asDouble();
                assertTrue(error < 1e-6, name + " layer " + layer.get("layer") + " " + proj + ": " + error);
            }
        }
        ppl(lowrank, tmp);
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3-moe-tiny", "olmoe-tiny", "glm4-moe-tiny"})
    void trainLowersTheLossAndWritesAnAdapterMergeAccepts(String name, @TempDir Path tmp) throws Exception {
        Path m = model(name);
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
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

        JsonNode adapterConfig = JSON.readTree(out.resolve("adapter/adapter_config.json").toFile());
        assertTrue(adapterConfig.get("target_modules").asText().contains("mlp\\.experts"), adapterConfig.toString());
        int moeLayer = config.isMoeLayer(0) ? 0 : 2;
        try (SafeTensorsFile adapter = SafeTensorsFile.open(out.resolve("adapter/adapter_model.safetensors"))) {
            String a = "base_model.model.model.layers." + moeLayer + ".mlp.experts.5.gate_proj.lora_A.weight";
            assertArrayEquals(new long[] {4, config.hidden_size}, adapter.info(a).shape());
            List<String> routers = new ArrayList<>();
            adapter.names().stream().filter(n -> n.contains(".mlp.gate.")).forEach(routers::add);
            assertTrue(!routers.isEmpty(), "trained routers saved: " + adapter.names());
        }
        if (config.modelType == ModelConfig.ModelType.GLM4_MOE) {
            CliRun aux = sparkmoe("train", "--model", m.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(),
                    "--aux-loss-coef", "0.01", "--out", tmp.resolve("aux").toString());
            assertEquals(1, aux.exitCode());
            assertTrue(aux.err().contains("--aux-loss-coef 0.01: model_type glm4_moe routes by sigmoid scores and "
                    + "defines no load-balancing loss"), aux.err());
            // PEFT saves (and its loader requires) the router module's buffer beside its weight: the frozen bias
            try (SafeTensorsFile adapter = SafeTensorsFile.open(out.resolve("adapter/adapter_model.safetensors"))) {
                assertArrayEquals(tensor(m, "model.layers.2.mlp.gate.e_score_correction_bias").data().asFloat(),
                        adapter.readFloat("base_model.model.model.layers.2.mlp.gate.e_score_correction_bias")
                                .data().asFloat(), "the correction bias is frozen: the checkpoint's");
            }
        }
        Path mergedDir = tmp.resolve("merged");
        ok("merge", "--model", m.toString(), "--adapter", out.resolve("adapter").toString(), "--out",
                mergedDir.toString());
        assertEquals(config.modelType, ModelFolder.readConfig(hadoop(mergedDir), CONF).modelType);
        ModelFolder.load(hadoop(mergedDir), CONF);
        String changed = new CheckpointLayout(config.modelType).expert(moeLayer, 5, Projection.GATE);
        assertTrue(!Arrays.equals(tensor(m, changed).data().asFloat(), tensor(mergedDir, changed).data().asFloat()),
                "the merged expert weight moved");
    }

    /**
     * train --shared-expert-lora on the types with a shared expert (glm4_moe's ungated mlp.shared_experts, qwen2_moe's
     * gated mlp.shared_expert): the loss falls with LoRA on routed + shared experts; the adapter holds the shared
     * expert's factors under PEFT's names, its B moved off PEFT's zero start; eval and logits with --adapter equal
     * eval and logits of the merged checkpoint (AdapterTest's tolerances: 1e-4 relative perplexity, 1e-5 of the
     * largest logit), whose shared expert weight moved, and differ from the base's.
     * DeepSeek's ungated shared experts the same (V2, and V3 with FP8 weights). qwen2-moe-tiny has no tokenizer.json, so
     * its gated shared expert is covered in executors' tests (WholeModelGradientCheckTest, PeftAdapterTest,
     * MergedTensorsTest).
     */
    @ParameterizedTest
    @ValueSource(strings = {"glm4-moe-tiny", "deepseek-v2-tiny", "deepseek-v3-tiny-fp8"})
    void trainWithSharedExpertLoraLowersTheLossAndEvalMergeAndAdapterAgree(String name, @TempDir Path tmp)
            throws Exception {
        Path m = model(name);
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
        Path out = tmp.resolve("train");
        ok("train", "--model", m.toString(), "--data", Fixtures.sysadminExcerpt(tmp).toString(), "--window", "32",
                "--steps", "24", "--batch-windows", "4", "--lr", "2e-2", "--rank", "4", "--alpha", "8",
                "--targets", "gate_proj,up_proj,down_proj", "--shared-expert-lora", "--checkpoint-every", "100",
                "--master", "local[2]", "--out", out.toString());
        List<String> log = Files.readAllLines(out.resolve("train-log.jsonl"));
        double first = JSON.readTree(log.get(0)).get("loss").asDouble();
        double last = JSON.readTree(log.get(log.size() - 1)).get("loss").asDouble();
        System.out.printf("%s: train loss with shared-expert LoRA %.4f → %.4f over %d rounds%n", name, first, last,
                log.size());
        assertTrue(last < first, name + ": loss " + first + " → " + last);

        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        int moeLayer = config.isMoeLayer(0) ? 0 : 1;
        String module = "base_model.model." + layout.sharedExpertModule(moeLayer, Projection.DOWN);
        try (SafeTensorsFile adapter = SafeTensorsFile.open(out.resolve("adapter/adapter_model.safetensors"))) {
            assertArrayEquals(new long[] {4, config.shared_expert_intermediate_size},
                    adapter.info(module + ".lora_A.weight").shape());
            INDArray b = adapter.readFloat(module + ".lora_B.weight");                     // [D, R], PEFT starts it at 0
            assertArrayEquals(new long[] {config.hidden_size, 4}, b.shape());
            assertTrue(b.amaxNumber().doubleValue() > 1e-4, "the shared expert's lora_B was trained: " + b.amaxNumber());
        }

        Path mergedDir = tmp.resolve("merged");
        ok("merge", "--model", m.toString(), "--adapter", out.resolve("adapter").toString(), "--out",
                mergedDir.toString());
        String shared = layout.sharedExpert(moeLayer, Projection.DOWN);
        try (Checkpoint base = Checkpoint.open(hadoop(m), CONF)) {                      // FP8 read dequantized
            float[] before = FusedExperts.perExpert(base, config).readFloat(shared).data().asFloat();
            assertTrue(!Arrays.equals(before, tensor(mergedDir, shared).data().asFloat()),
                    "the merged shared expert weight moved");
        }

        Path evalAdapter = tmp.resolve("eval-adapter.json");
        ok("eval", "--model", m.toString(), "--adapter", out.resolve("adapter").toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "64", "--master", "local[2]", "--out",
                evalAdapter.toString());
        double pplWithAdapter = JSON.readTree(evalAdapter.toFile()).get("all").get("ppl").asDouble();
        double pplOfMerged = ppl(mergedDir, tmp);
        assertTrue(Math.abs(pplWithAdapter - pplOfMerged) / pplOfMerged <= 1e-4,
                "eval --adapter ppl " + pplWithAdapter + " vs eval of the merge " + pplOfMerged);

        Path ids = Fixtures.root().resolve("tests/src/test/resources/reference").resolve(name + "-reference.safetensors");
        Path withAdapter = tmp.resolve("logits-adapter.safetensors");
        Path ofMerged = tmp.resolve("logits-merged.safetensors");
        ok("logits", "--model", m.toString(), "--adapter", out.resolve("adapter").toString(), "--input-ids",
                ids.toString(), "--out", withAdapter.toString());
        ok("logits", "--model", mergedDir.toString(), "--input-ids", ids.toString(), "--out", ofMerged.toString());
        try (SafeTensorsFile x = SafeTensorsFile.open(withAdapter); SafeTensorsFile y = SafeTensorsFile.open(ofMerged);
             SafeTensorsFile reference = SafeTensorsFile.open(ids)) {
            INDArray logits = x.readFloat("logits");
            double scale = logits.amaxNumber().doubleValue();
            assertTrue(logits.sub(y.readFloat("logits")).amaxNumber().doubleValue() <= 1e-5 * scale,
                    "logits --adapter vs the merged checkpoint's");
            assertTrue(logits.sub(reference.readFloat("logits")).amaxNumber().doubleValue() > 1e-2,
                    "the adapter should change the logits");
        }
    }

    /** Refused before Spark starts, in one line: the fused format, a model without a shared expert. */
    @org.junit.jupiter.api.Test
    void sharedExpertLoraRefusesTheFusedFormatAndModelsWithoutOne(@TempDir Path tmp) throws Exception {
        Path m = model("glm4-moe-tiny");
        CliRun fused = sparkmoe("train", "--model", m.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--window", "32", "--shared-expert-lora", "--adapter-format", "fused", "--out", tmp.resolve("fused").toString());
        assertEquals(1, fused.exitCode());
        assertTrue(fused.err().contains("--adapter-format fused with LoRA on the shared expert is not supported: use "
                + "--adapter-format per-expert"), fused.err());
        CliRun none = sparkmoe("train", "--model", model("qwen3-moe-tiny").toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "32", "--shared-expert-lora", "--out", tmp.resolve("none").toString());
        assertEquals(1, none.exitCode());
        assertTrue(none.err().contains("LoRA on the shared expert: model_type qwen3_moe has no shared expert"), none.err());
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3-moe-tiny", "olmoe-tiny", "glm4-moe-tiny"})
    void retrainRouterWritesACheckpointThatLoads(String name, @TempDir Path tmp) throws Exception {
        Path m = model(name);
        Path calib = tmp.resolve("calib");
        ok("calibrate", "--model", m.toString(), "--data", Fixtures.corpus("sysadmin.txt") + ","
                + Fixtures.corpus("scripture.txt"), "--window", "64", "--max-tokens-per-file", "512",
                "--export-router-data", "--master", "local[2]", "--out", calib.toString());
        Path out = tmp.resolve("router");
        ok("retrain-router", "--model", m.toString(), "--router-data", calib.resolve("router-data").toString(),
                "--epochs", "2", "--out", out.toString(), "--master", "local[2]");
        ModelConfig config = ModelFolder.readConfig(hadoop(m), CONF);
        ModelFolder.load(hadoop(out), CONF);
        int moeLayer = config.isMoeLayer(0) ? 0 : 2;
        String gate = new CheckpointLayout(config.modelType).routerGate(moeLayer);
        assertTrue(!Arrays.equals(tensor(m, gate).data().asFloat(), tensor(out, gate).data().asFloat()),
                "the router of layer " + moeLayer + " was retrained");
    }

    /** The demo on OLMoE, whose norm_topk_prob is false: its topk step rescales with none instead of measured. */
    @org.junit.jupiter.api.Test
    void demoRunsOnOlmoe(@TempDir Path tmp) throws Exception {
        assertEquals("none", FixtureCommands.demoRescale("olmoe-tiny", tmp));
    }

    /** The demo on GLM-4.5 (sigmoid router with a correction bias, groups, a shared expert). */
    @org.junit.jupiter.api.Test
    void demoRunsOnGlm(@TempDir Path tmp) throws Exception {
        assertEquals("measured", FixtureCommands.demoRescale("glm4-moe-tiny", tmp));
    }

    /**
     * {@code --layout fused} writes transformers 5's fused experts, which evaluate exactly as the per-expert output;
     * a fused input keeps its layout without {@code --layout}.
     */
    @org.junit.jupiter.api.Test
    void layoutOptionWritesFusedExpertsAndAFusedInputStaysFused(@TempDir Path tmp) throws Exception {
        Path m = model("olmoe-tiny");
        Path perExpert = tmp.resolve("topk-per-expert");
        Path fused = tmp.resolve("topk-fused");
        Path again = tmp.resolve("topk-again");
        ok("surgery", "topk", "--top-k", "1", "--rescale", "none", "--model", m.toString(), "--out",
                perExpert.toString(), "--master", "local[2]");
        ok("surgery", "topk", "--top-k", "1", "--rescale", "none", "--layout", "fused", "--model", m.toString(),
                "--out", fused.toString(), "--master", "local[2]");
        ok("surgery", "topk", "--top-k", "2", "--rescale", "none", "--model", fused.toString(), "--out",
                again.toString(), "--master", "local[2]");
        for (Path p : List.of(fused, again)) {
            try (SafeTensorsFile f = SafeTensorsFile.open(p.resolve("model.safetensors"))) {
                assertTrue(f.has("model.layers.1.mlp.experts.gate_up_proj"), p + ": fused");
                assertTrue(f.names().stream().noneMatch(n -> n.contains(".experts.0.")), p + ": no per-expert keys");
            }
        }
        try (SafeTensorsFile f = SafeTensorsFile.open(perExpert.resolve("model.safetensors"))) {
            assertTrue(f.has("model.layers.1.mlp.experts.0.gate_proj.weight"), "per-expert by default");
        }
        assertEquals(ppl(perExpert, tmp), ppl(fused, tmp), "bit-identical eval");
        CliRun bad = sparkmoe("surgery", "topk", "--top-k", "1", "--layout", "stacked", "--model", m.toString(),
                "--out", tmp.resolve("bad").toString());
        assertEquals(1, bad.exitCode());
        assertTrue(bad.err().contains("--layout must be per-expert or fused, got 'stacked'"), bad.err());
    }
}
