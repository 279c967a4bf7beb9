package org.sparkmoe.adapter;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.api.function.Executable;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Predicate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** PEFT adapter folders: exact round trips, PEFT's names and config fields, one-line errors for bad adapters. */
class PeftAdapterTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final List<Projection> ALL = List.of(Projection.GATE, Projection.UP, Projection.DOWN);

    @TempDir
    java.nio.file.Path tmp;

    private Path dir(String name) {
        return new Path(tmp.resolve(name).toUri());
    }

    private static PeftAdapter random(ModelConfig model, AdapterConfig config) {
        return PeftAdapter.of(model, config, AdapterFixtures.randomState(model, config, 11));
    }

    private static void assertSameState(Map<String, INDArray> expected, Map<String, INDArray> actual) {
        assertEquals(new ArrayList<>(expected.keySet()), new ArrayList<>(actual.keySet()));
        expected.forEach((key, array) -> assertEquals(array, actual.get(key), key));
    }

    @Test
    void mixtralRoundTripIsExactWithPeftNamesAndConfig() throws IOException {
        ModelConfig model = AdapterFixtures.mixtral();
        AdapterConfig config = new AdapterConfig(4, 8, ALL, true, "examples/models/mixtral-tiny");
        PeftAdapter adapter = random(model, config);
        Path dir = dir("mixtral-adapter");
        adapter.write(dir, CONF);

        PeftAdapter back = PeftAdapter.read(dir, CONF, model);
        assertEquals(config, back.config());
        assertSameState(adapter.state(), back.state());

        try (SafeTensorsFile file = SafeTensorsFile.open(tmp.resolve("mixtral-adapter/adapter_model.safetensors"))) {
            // 4 layers × (8 experts × 3 projections × 2 matrices + router)
            assertEquals(4 * (8 * 3 * 2 + 1), file.names().size());
            assertArrayEquals(new long[] {4, 128},
                    file.info("base_model.model.model.layers.0.block_sparse_moe.experts.3.w1.lora_A.weight").shape());
            assertArrayEquals(new long[] {256, 4},
                    file.info("base_model.model.model.layers.0.block_sparse_moe.experts.3.w1.lora_B.weight").shape());
            assertArrayEquals(new long[] {4, 256},
                    file.info("base_model.model.model.layers.3.block_sparse_moe.experts.7.w2.lora_A.weight").shape());
            assertArrayEquals(new long[] {8, 128},
                    file.info("base_model.model.model.layers.2.mlp.gate.weight").shape());
            assertEquals(adapter.state().get("model.layers.1.block_sparse_moe.experts.w3.lora_B").slice(5),
                    file.readFloat("base_model.model.model.layers.1.block_sparse_moe.experts.5.w3.lora_B.weight"));
            assertEquals("pt", file.metadata().get("format"));
        }
        JsonNode json = JSON.readTree(tmp.resolve("mixtral-adapter/adapter_config.json").toFile());
        assertEquals("LORA", json.get("peft_type").asText());
        assertEquals("CAUSAL_LM", json.get("task_type").asText());
        assertEquals(4, json.get("r").asInt());
        assertTrue(json.get("lora_alpha").isInt());
        assertEquals(8, json.get("lora_alpha").asInt());
        assertEquals("[\"w1\",\"w3\",\"w2\"]", json.get("target_modules").toString());
        assertEquals("[\"mlp.gate\"]", json.get("modules_to_save").toString());
        assertEquals("examples/models/mixtral-tiny", json.get("base_model_name_or_path").asText());
        assertFalse(json.get("use_rslora").asBoolean());
        assertEquals("none", json.get("bias").asText());
        assertEquals(2.0, back.config().scale());
    }

    @Test
    void qwenRoundTripTargetsOnlyRoutedExperts() throws IOException {
        ModelConfig model = AdapterFixtures.qwen();
        AdapterConfig config = new AdapterConfig(2, 3, List.of(Projection.DOWN, Projection.GATE), false, null);
        PeftAdapter adapter = random(model, config);
        Path dir = dir("qwen-adapter");
        adapter.write(dir, CONF);
        PeftAdapter back = PeftAdapter.read(dir, CONF, model);
        assertEquals(List.of(Projection.GATE, Projection.DOWN), back.config().targets());
        assertEquals(1.5, back.config().scale());
        assertSameState(adapter.state(), back.state());
        // layer 1 is dense (mlp_only_layers): only layers 0 and 2 carry LoRA tensors
        assertEquals(List.of("model.layers.0.mlp.experts.gate_proj.lora_A", "model.layers.0.mlp.experts.gate_proj.lora_B",
                "model.layers.0.mlp.experts.down_proj.lora_A", "model.layers.0.mlp.experts.down_proj.lora_B",
                "model.layers.2.mlp.experts.gate_proj.lora_A", "model.layers.2.mlp.experts.gate_proj.lora_B",
                "model.layers.2.mlp.experts.down_proj.lora_A", "model.layers.2.mlp.experts.down_proj.lora_B"),
                new ArrayList<>(back.state().keySet()));
        JsonNode json = JSON.readTree(tmp.resolve("qwen-adapter/adapter_config.json").toFile());
        String regex = json.get("target_modules").asText();
        assertTrue("model.layers.2.mlp.experts.5.down_proj".matches(regex), regex);
        assertFalse("model.layers.0.mlp.shared_expert.down_proj".matches(regex), regex);
        assertFalse("model.layers.1.mlp.down_proj".matches(regex), regex);
        assertTrue(json.get("modules_to_save").isNull());
    }

    @Test
    void stateIsCheckedAgainstTheModel() {
        ModelConfig model = AdapterFixtures.mixtral();
        AdapterConfig config = new AdapterConfig(4, 8, List.of(Projection.GATE), false, null);
        LinkedHashMap<String, INDArray> state = AdapterFixtures.randomState(model, config, 3);
        state.remove("model.layers.2.block_sparse_moe.experts.w1.lora_B");
        assertMessage("trainable state: missing model.layers.2.block_sparse_moe.experts.w1.lora_B",
                () -> PeftAdapter.of(model, config, state));
        LinkedHashMap<String, INDArray> wrongShape = AdapterFixtures.randomState(model, config, 3);
        wrongShape.put("model.layers.0.block_sparse_moe.experts.w1.lora_A", wrongShape
                .get("model.layers.0.block_sparse_moe.experts.w1.lora_A").get(NDArrayIndex.interval(0, 7)).dup());
        assertMessage("trainable state: model.layers.0.block_sparse_moe.experts.w1.lora_A has shape [7, 4, 128], expected [8, 4, 128]",
                () -> PeftAdapter.of(model, config, wrongShape));
        LinkedHashMap<String, INDArray> extra = AdapterFixtures.randomState(model, config, 3);
        extra.put("model.layers.0.block_sparse_moe.gate.weight", Nd4j.zeros(8, 128));
        assertMessage("trainable state: unexpected key model.layers.0.block_sparse_moe.gate.weight",
                () -> PeftAdapter.of(model, config, extra));
    }

    @Test
    void wrongRankIsNamed() throws IOException {
        ModelConfig model = AdapterFixtures.mixtral();
        Path dir = writeMixtral("rank", new AdapterConfig(4, 8, ALL, false, null));
        editConfig("rank", json -> json.put("r", 8));
        assertMessage("adapter_model.safetensors: wrong rank: base_model.model.model.layers.0.block_sparse_moe.experts.0.w1"
                + ".lora_A.weight has shape [4, 128], rank 4, but adapter_config.json says r=8",
                () -> PeftAdapter.read(dir, CONF, model));
    }

    @Test
    void routerUnderTransformers4MixtralNameIsStillRead() throws IOException {
        ModelConfig model = AdapterFixtures.mixtral();
        AdapterConfig config = new AdapterConfig(4, 8, ALL, true, null);
        PeftAdapter adapter = random(model, config);
        Path dir = writeMixtral("legacy-router", config);
        editConfig("legacy-router", json -> json.putArray("modules_to_save").add("block_sparse_moe.gate"));
        Map<String, INDArray> legacy = new LinkedHashMap<>();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            String gate = "model.layers." + l + ".block_sparse_moe.gate.weight";
            legacy.put("base_model.model." + gate, adapter.state().get(gate));
        }
        rewriteWeights("legacy-router", name -> !name.endsWith(".mlp.gate.weight"), legacy);
        PeftAdapter back = PeftAdapter.read(dir, CONF, model);
        assertTrue(back.config().trainRouter());
        assertSameState(adapter.state(), back.state());
    }

    @Test
    void missingExpertIsNamed() throws IOException {
        ModelConfig model = AdapterFixtures.mixtral();
        Path dir = writeMixtral("missing", new AdapterConfig(4, 8, ALL, false, null));
        String dropped = "base_model.model.model.layers.2.block_sparse_moe.experts.6.w3.lora_B.weight";
        rewriteWeights("missing", name -> !name.equals(dropped), Map.of());
        assertMessage("adapter_model.safetensors: missing " + dropped + " (adapter_config.json targets w1, w3, w2 in all 8"
                + " experts of every MoE layer)", () -> PeftAdapter.read(dir, CONF, model));
    }

    @Test
    void expertBeyondTheModelIsNamed() throws IOException {
        ModelConfig model = AdapterFixtures.mixtral();
        Path dir = writeMixtral("expert8", new AdapterConfig(4, 8, ALL, false, null));
        String extra = "base_model.model.model.layers.0.block_sparse_moe.experts.8.w1.lora_A.weight";
        rewriteWeights("expert8", name -> true, Map.of(extra, Nd4j.zeros(4, 128)));
        assertMessage(extra + ": expert 8 does not exist (the model has 8 experts)",
                () -> PeftAdapter.read(dir, CONF, model));
    }

    @Test
    void unknownModulesAreNamed() throws IOException {
        ModelConfig model = AdapterFixtures.mixtral();
        Path dir = writeMixtral("unknown", new AdapterConfig(4, 8, ALL, false, null));
        editConfig("unknown", json -> json.putArray("target_modules").add("w1").add("q_proj"));
        assertMessage("adapter_config.json: target_modules [\"w1\",\"q_proj\"] selects model.layers.0.self_attn.q_proj, "
                + "which is not an expert projection of this mixtral model", () -> PeftAdapter.read(dir, CONF, model));
        editConfig("unknown", json -> json.putArray("target_modules").add("w1").add("w3").add("w2"));
        String extra = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        rewriteWeights("unknown", name -> true, Map.of(extra, Nd4j.zeros(4, 128)));
        assertMessage("adapter_model.safetensors: unknown module in key " + extra, () -> PeftAdapter.read(dir, CONF, model));
        editConfig("unknown", json -> json.putArray("modules_to_save").add("lm_head"));
        assertMessage("adapter_config.json: unknown module \"lm_head\" in modules_to_save",
                () -> PeftAdapter.read(dir, CONF, model));
    }

    @Test
    void adapterForAnotherArchitectureIsRejected() throws IOException {
        ModelConfig mixtral = AdapterFixtures.mixtral();
        ModelConfig qwen = AdapterFixtures.qwen();
        Path qwenDir = dir("qwen");
        random(qwen, new AdapterConfig(2, 4, ALL, false, null)).write(qwenDir, CONF);
        assertMessage("selects no expert projection of this mixtral model (its expert projections: w1, w3, w2; "
                + "an adapter for a different architecture?)", () -> PeftAdapter.read(qwenDir, CONF, mixtral));
        // the config says w1/w3/w2 but the tensors are Qwen's
        editConfig("qwen", json -> json.putArray("target_modules").add("w1").add("w3").add("w2"));
        assertMessage("adapter for a different architecture: base_model.model.model.layers.0.mlp.experts.0.gate_proj"
                + ".lora_A.weight does not fit this mixtral model", () -> PeftAdapter.read(qwenDir, CONF, mixtral));
        // a Mixtral adapter of another width: hidden_size 64 instead of 128
        ObjectNode narrow = (ObjectNode) JSON.readTree(AdapterFixtures.configJson("mixtral-tiny"));
        narrow.put("hidden_size", 64);
        ModelConfig narrowModel = ModelConfig.parse(narrow.toString(), "narrow/config.json");
        Path narrowDir = dir("narrow");
        random(narrowModel, new AdapterConfig(4, 8, ALL, false, null)).write(narrowDir, CONF);
        assertMessage("base_model.model.model.layers.0.block_sparse_moe.experts.0.w1.lora_A.weight has shape [4, 64] but the"
                + " mixtral model implies [4, 128] (an adapter for a different model?)",
                () -> PeftAdapter.read(narrowDir, CONF, mixtral));
    }

    @Test
    void unsupportedConfigFieldsAreNamed() throws IOException {
        ModelConfig model = AdapterFixtures.mixtral();
        Path dir = writeMixtral("fields", new AdapterConfig(4, 8, ALL, false, null));
        editConfig("fields", json -> json.put("peft_type", "IA3"));
        assertMessage("adapter_config.json: peft_type must be \"LORA\", got \"IA3\"", () -> PeftAdapter.read(dir, CONF, model));
        editConfig("fields", json -> json.put("peft_type", "LORA").put("use_rslora", true));
        assertMessage("adapter_config.json: unsupported use_rslora true, expected false", () -> PeftAdapter.read(dir, CONF, model));
        editConfig("fields", json -> json.put("use_rslora", false).putArray("target_modules").add("w1"));
        // a list selecting w1 only while the file holds w3/w2 too: the first extra key is named
        assertMessage("base_model.model.model.layers.0.block_sparse_moe.experts.0.w3.lora_A.weight adapts w3, which "
                + "adapter_config.json's target_modules does not select (w1)", () -> PeftAdapter.read(dir, CONF, model));
        assertMessage("adapter folder not found: ", () -> PeftAdapter.read(dir("nowhere"), CONF, model));
    }

    @Test
    void qwenListOfPlainNamesWouldAlsoAdaptTheDenseMlp() {
        ModelConfig model = AdapterFixtures.qwen();
        String json = new AdapterConfig(2, 4, ALL, false, null).toJson(model)
                .replaceFirst("\"target_modules\" : \"[^\\n]*\"", "\"target_modules\" : [\"gate_proj\"]");
        assertMessage("cfg: target_modules [\"gate_proj\"] selects model.layers.1.mlp.gate_proj, which is not an expert "
                + "projection of this qwen2_moe model (SparkMoE adapts gate_proj, up_proj, down_proj of the experts and "
                + "shared expert only)", () -> AdapterConfig.parse(json, "cfg", model));
    }

    /**
     * LoRA on the shared expert: per layer one [R, in] / [out, R] pair under the module's own name (glm4_moe's
     * mlp.shared_experts, qwen2_moe's mlp.shared_expert), target_modules' regex naming it, an exact round trip; a
     * config that selects only part of it, or other projections than the experts', is refused.
     */
    @Test
    void sharedExpertLoraRoundTripsUnderPeftNames() throws IOException {
        for (ModelConfig model : List.of(AdapterFixtures.glm(), AdapterFixtures.qwen())) {
            String module = model.modelType == ModelConfig.ModelType.QWEN2_MOE ? "shared_expert" : "shared_experts";
            int layer = model.modelType == ModelConfig.ModelType.QWEN2_MOE ? 0 : 1;
            AdapterConfig config = new AdapterConfig(2, 4, List.of(Projection.GATE, Projection.DOWN), false, null, true);
            PeftAdapter adapter = random(model, config);
            Path dir = dir("shared-" + module);
            adapter.write(dir, CONF);
            JsonNode json = JSON.readTree(tmp.resolve("shared-" + module).resolve(PeftAdapter.CONFIG_FILE).toFile());
            assertEquals("model\\.layers\\.\\d+\\.mlp\\.(experts\\.(\\d+\\.)?|" + module + "\\.)(gate_proj|down_proj)",
                    json.get("target_modules").asText());
            String prefix = "base_model.model.model.layers." + layer + ".mlp." + module + ".";
            try (SafeTensorsFile f = SafeTensorsFile.open(tmp.resolve("shared-" + module).resolve(PeftAdapter.WEIGHTS_FILE))) {
                assertArrayEquals(new long[] {2, model.hidden_size}, f.info(prefix + "gate_proj.lora_A.weight").shape());
                assertArrayEquals(new long[] {model.hidden_size, 2}, f.info(prefix + "down_proj.lora_B.weight").shape());
                assertEquals(adapter.state().get("model.layers." + layer + ".mlp." + module + ".down_proj.lora_A").slice(0),
                        f.readFloat(prefix + "down_proj.lora_A.weight"));
                assertFalse(f.has(prefix + "up_proj.lora_A.weight"), "up is not a target");
            }
            PeftAdapter back = PeftAdapter.read(dir, CONF, model);
            assertTrue(back.config().sharedExpert(), module);
            assertSameState(adapter.state(), back.state());

            // the shared expert's gate only
            String partial = config.toJson(model).replace(module + "\\\\.)", module + "\\\\.(?=gate))");
            assertMessage("cfg: target_modules", () -> AdapterConfig.parse(partial, "cfg", model));
            assertMessage("shared-expert projections; SparkMoE adapts the shared expert's gate_proj, down_proj (the routed "
                    + "experts' targets) in every MoE layer, or none of it", () -> AdapterConfig.parse(partial, "cfg", model));
        }
        assertMessage("the adapter adapts the shared expert, but model_type mixtral has none",
                () -> PeftAdapter.expectedState(AdapterFixtures.mixtral(), new AdapterConfig(2, 4, ALL, false, null, true)));
        IllegalArgumentException fused = assertThrows(IllegalArgumentException.class,
                () -> random(AdapterFixtures.glm(), new AdapterConfig(2, 4, ALL, false, null, true))
                        .write(dir("fused"), CONF, org.sparkmoe.io.ExpertLayout.FUSED));
        assertEquals("--adapter-format fused with LoRA on the shared expert is not supported: use --adapter-format "
                + "per-expert", fused.getMessage());
    }

    /**
     * A trained GLM router is a PEFT modules_to_save copy of the whole router module, so the adapter carries its
     * e_score_correction_bias buffer too (PEFT's loader requires it): the checkpoint's, frozen. Reading checks its
     * shape and keeps the model's own.
     */
    @Test
    void glmTrainedRouterCarriesTheCheckpointsFrozenBias() throws IOException {
        ModelConfig model = AdapterFixtures.glm();
        AdapterConfig config = new AdapterConfig(2, 4, ALL, true, null);
        PeftAdapter adapter = random(model, config);
        assertThrows(IllegalStateException.class, () -> adapter.write(dir("no-bias"), CONF));
        Map<String, INDArray> checkpoint = new java.util.HashMap<>();
        for (int l : new int[] {1, 2}) {
            checkpoint.put("model.layers." + l + ".mlp.gate.e_score_correction_bias",
                    Nd4j.create(new float[] {0.1f * l, -0.2f, 0.3f, 0f, 0f, 0.5f, -0.1f, 0.2f}, new long[] {8}));
        }
        Path dir = dir("glm-adapter");
        adapter.withRouterBiases(new MapSource(checkpoint)).write(dir, CONF);
        try (SafeTensorsFile f = SafeTensorsFile.open(tmp.resolve("glm-adapter").resolve(PeftAdapter.WEIGHTS_FILE))) {
            assertEquals(checkpoint.get("model.layers.2.mlp.gate.e_score_correction_bias"),
                    f.readFloat("base_model.model.model.layers.2.mlp.gate.e_score_correction_bias"));
            assertFalse(f.has("base_model.model.model.layers.0.mlp.gate.e_score_correction_bias"), "layer 0 dense");
        }
        PeftAdapter back = PeftAdapter.read(dir, CONF, model);
        assertSameState(adapter.state(), back.state());
        assertTrue(back.state().keySet().stream().noneMatch(k -> k.contains("e_score_correction_bias")));
        rewriteWeights("glm-adapter", k -> !k.endsWith("layers.1.mlp.gate.e_score_correction_bias"),
                Map.of("base_model.model.model.layers.1.mlp.gate.e_score_correction_bias", Nd4j.zeros(4)));
        assertMessage("layers.1.mlp.gate.e_score_correction_bias has shape [4] but the model implies [8]",
                () -> PeftAdapter.read(dir, CONF, model));
        PeftAdapter frozenRouter = random(model, new AdapterConfig(2, 4, ALL, false, null));
        assertTrue(frozenRouter == frozenRouter.withRouterBiases(new MapSource(Map.of())), "no router, no bias");
    }

    /** A checkpoint of a few named tensors. */
    private record MapSource(Map<String, INDArray> tensors) implements org.sparkmoe.io.TensorSource {
        @Override
        public boolean has(String name) {
            return tensors.containsKey(name);
        }

        @Override
        public long[] shape(String name) {
            return tensors.get(name).shape();
        }

        @Override
        public INDArray readFloat(String name) {
            return tensors.get(name).dup();
        }

        @Override
        public String describe() {
            return "test tensors";
        }
    }

    private Path writeMixtral(String name, AdapterConfig config) {
        Path dir = dir(name);
        random(AdapterFixtures.mixtral(), config).write(dir, CONF);
        return dir;
    }

    private void editConfig(String name, Consumer<ObjectNode> edit) throws IOException {
        java.nio.file.Path file = tmp.resolve(name).resolve(PeftAdapter.CONFIG_FILE);
        ObjectNode json = (ObjectNode) JSON.readTree(file.toFile());
        edit.accept(json);
        Files.writeString(file, json.toString());
    }

    /** Rewrites the weights keeping the tensors {@code keep} accepts, then appending {@code extra}. */
    private void rewriteWeights(String name, Predicate<String> keep, Map<String, INDArray> extra) {
        java.nio.file.Path file = tmp.resolve(name).resolve(PeftAdapter.WEIGHTS_FILE);
        List<NamedTensor> tensors = new ArrayList<>();
        try (SafeTensorsFile in = SafeTensorsFile.open(file)) {
            for (String key : in.names()) {
                if (keep.test(key)) {
                    tensors.add(new NamedTensor.Floats(key, in.readFloat(key)));
                }
            }
        }
        extra.forEach((key, array) -> tensors.add(new NamedTensor.Floats(key, array)));
        try {
            SafeTensorsWriter.write(FileSystem.getLocal(CONF), new Path(file.toUri()), tensors, Map.of("format", "pt"));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static void assertMessage(String expectedPart, Executable call) {
        AdapterFormatException e = assertThrows(AdapterFormatException.class, call);
        assertTrue(e.getMessage().contains(expectedPart), "message: " + e.getMessage());
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
    }
}
