package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.adapter.AdapterFormatException;
import org.sparkmoe.adapter.MergedTensors;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelLoader;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * PEFT adapters on transformers 5's fused expert parameters ({@code target_parameters} on
 * {@code mlp.experts.gate_up_proj} and {@code down_proj}), both shape generations.
 *
 * <p>The adapters come from {@code tests/src/test/resources/reference/make_fused_peft_adapters.py} (transformers
 * 5.17.0, PEFT 0.21.0): PEFT itself saves a fused adapter on the bundled Mixtral (its peft_version removed, so only the
 * shapes tell the generation), the script rewrites the same ΔW in PEFT ≤ 0.19.0's shapes following PEFT's documented
 * key layout, and as SparkMoE's per-expert keys (PEFT gives the same logits for both, difference 0); the reference
 * logits are PEFT's on 2 × 16 tokens. On the tiny Qwen3-MoE PEFT adapts gate_up_proj only, and D = 2I makes its shapes
 * the same in both generations, so only the peft_version PEFT wrote decides.
 */
class FusedPeftAdapterTest {
    private static final Configuration CONF = new Configuration();
    private static JavaSparkContext sc;

    @BeforeAll
    static void startSpark() {
        sc = SparkContexts.start("fused-peft-adapter-test", "local[2]");
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    private static Path reference(String relative) {
        return Fixtures.root().resolve("tests/src/test/resources/reference").resolve(relative);
    }

    private static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    private static MoeTransformer withAdapter(Path model, Path adapter) {
        ModelConfig config = ModelFolder.readConfig(hadoop(model), CONF);
        PeftAdapter peft = PeftAdapter.read(hadoop(adapter), CONF, config);
        try (Checkpoint checkpoint = Checkpoint.open(hadoop(model), CONF)) {
            return ModelLoader.load(config, new MergedTensors(checkpoint, peft), Device.CPU.groupedGemm());
        }
    }

    private static String eval(Path model, Path adapter) {
        String data = Fixtures.corpus("sysadmin.txt").toUri().toString();
        return EvalJob.run(sc, new EvalPlan(model.toUri().toString(), List.of(data), TextSplit.TEST, 128, 2, 4, 2,
                adapter.toUri().toString(), Device.CPU)).toJson().replace(adapter.toUri().toString(), "ADAPTER");
    }

    @Test
    void bothGenerationsAndThePerExpertEquivalentEvaluateBitIdentically() {
        Path base = reference("fused-peft-mixtral");
        Path model = Fixtures.tinyModel();
        String perExpert = eval(model, base.resolve("per-expert"));
        assertEquals(perExpert, eval(model, base.resolve("new")), "PEFT ≥ 0.19.1 shapes");
        assertEquals(perExpert, eval(model, base.resolve("old")), "PEFT ≤ 0.19.0 shapes");
    }

    @Test
    void logitsWithAFusedAdapterMatchPeft() {
        Path base = reference("fused-peft-mixtral");
        try (SafeTensorsFile ref = SafeTensorsFile.open(base.resolve("reference.safetensors"))) {
            long[] ids = ref.readLongs("input_ids");
            int[][] tokens = new int[2][16];
            for (int i = 0; i < ids.length; i++) {
                tokens[i / 16][i % 16] = (int) ids[i];
            }
            INDArray expected = ref.readFloat("logits").reshape(32, 1024);
            for (String generation : new String[] {"new", "old"}) {
                INDArray ours = withAdapter(Fixtures.tinyModel(), base.resolve(generation)).logits(tokens);
                double diff = expected.sub(ours).amaxNumber().doubleValue();
                System.out.printf("fused PEFT adapter (%s shapes): max |Δlogit| vs PEFT = %.3g%n", generation, diff);
                assertTrue(diff <= 2e-4, generation + ": " + diff);
            }
        }
    }

    @Test
    void ambiguousShapesNeedPeftVersion(@TempDir Path tmp) throws Exception {
        Path adapter = reference("fused-peft-qwen3");
        Path model = reference("qwen3-moe-tiny");
        ModelConfig config = ModelFolder.readConfig(hadoop(model), CONF);
        PeftAdapter read = PeftAdapter.read(hadoop(adapter), CONF, config);
        assertEquals(List.of("gate_proj", "up_proj"), read.config().targets().stream()
                .map(p -> new org.sparkmoe.io.CheckpointLayout(config.modelType).projectionName(p)).toList());
        Path unversioned = Files.createDirectories(tmp.resolve("unversioned"));
        Files.copy(adapter.resolve("adapter_model.safetensors"), unversioned.resolve("adapter_model.safetensors"));
        String json = Files.readString(adapter.resolve("adapter_config.json"));
        String without = json.replaceAll("\\s*\"peft_version\": \"[^\"]*\",", "");
        assertTrue(!without.equals(json), "the fixture's adapter_config.json holds peft_version");
        Files.writeString(unversioned.resolve("adapter_config.json"), without);
        AdapterFormatException e = assertThrows(AdapterFormatException.class,
                () -> PeftAdapter.read(hadoop(unversioned), CONF, config));
        assertTrue(e.getMessage().contains("ambiguous LoRA shapes: for [gate_up_proj] with D = 32 and I = 16")
                && e.getMessage().contains("--peft-version") && e.getMessage().contains("peft_version")
                && e.getMessage().lines().count() == 1, e.getMessage());
        assertEquals(read.state(), PeftAdapter.read(hadoop(unversioned), CONF, config, "0.21.0").state(),
                "--peft-version settles what adapter_config.json's peft_version settled");
        Map<String, INDArray> state = read.state();
        assertTrue(state.get("model.layers.0.mlp.experts.gate_proj.lora_B").norm2Number().doubleValue() > 0);
        assertArrayEquals(new long[] {6, 1, 32}, state.get("model.layers.2.mlp.experts.up_proj.lora_A").shape());
    }
}
