package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.adapter.AdapterConfig;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code --adapter-format fused}: a per-expert adapter written as PEFT's fused-expert adapter (rank 2r on
 * gate_up_proj, lora_alpha doubled) reads back to the same LoRA values, and an eval within 1e-6 relative of the
 * per-expert adapter's (not bit for bit: the rank-2r GEMMs sum in another order).
 */
class FusedAdapterExportTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();
    private static JavaSparkContext sc;

    @BeforeAll
    static void startSpark() {
        sc = SparkContexts.start("fused-adapter-export-test", "local[2]");
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    private static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    /** A random non-zero adapter of the tiny Mixtral (r 4, alpha 8) on {@code targets}. */
    private static PeftAdapter randomAdapter(List<Projection> targets, boolean trainRouter, long seed) {
        ModelConfig config = ModelFolder.readConfig(hadoop(Fixtures.tinyModel()), CONF);
        AdapterConfig adapterConfig = new AdapterConfig(4, 8, targets, trainRouter, Fixtures.tinyModel().toString());
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        Nd4j.getRandom().setSeed(seed);
        try (Checkpoint base = Checkpoint.open(hadoop(Fixtures.tinyModel()), CONF)) {
            PeftAdapter.expectedState(config, adapterConfig).forEach((key, shape) -> state.put(key,
                    key.endsWith(".gate.weight")
                            ? base.readFloat(key).addi(Nd4j.randn(DataType.FLOAT, shape).muli(0.5))
                            : Nd4j.randn(DataType.FLOAT, shape).muli(0.05)));
        }
        return PeftAdapter.of(config, adapterConfig, state);
    }

    /** The eval report's totals over all files of the tiny Mixtral with {@code adapter}. */
    private static JsonNode eval(Path adapter) throws Exception {
        String data = Fixtures.corpus("sysadmin.txt").toUri().toString();
        String json = EvalJob.run(sc, new EvalPlan(Fixtures.tinyModel().toUri().toString(), List.of(data),
                TextSplit.TEST, 128, 2, 4, 2, adapter.toUri().toString(), Device.CPU)).toJson();
        return JSON.readTree(json).get("all");
    }

    /**
     * The same tokens and an NLL sum within 1e-6 relative. Not bit for bit: the fused adapter holds the very same
     * float values (checked exactly by {@link #sameBlocks}), but at rank 2r, so the LoRA GEMMs run over zero-padded
     * inner dimensions (x·A'ᵀ [.., 2r], then K = 2r in ·B'ᵀ) and float32 sums in another order (measured: ~3e-10
     * relative on the NLL sum of the tiny Mixtral).
     */
    private static void assertSameEval(JsonNode perExpert, JsonNode fused) {
        assertEquals(perExpert.get("tokens").asLong(), fused.get("tokens").asLong());
        double a = perExpert.get("nll_sum").asDouble();
        double b = fused.get("nll_sum").asDouble();
        System.out.printf("fused adapter export: nll_sum %.12f vs per-expert %.12f, relative %.3g%n", b, a,
                Math.abs(a - b) / Math.abs(a));
        assertTrue(Math.abs(a - b) <= 1e-6 * Math.abs(a), "nll_sum " + b + " vs per-expert " + a);
    }

    /**
     * The read-back rank-2r LoRA of layer 0 holds the per-expert one exactly: gate A' = [A_gate; A_up] (A_up zero
     * when untargeted), gate B' = [B_gate, 0], up B' = [0, B_up], down A' = [A_down; 0], B' = [B_down, 0].
     */
    private static void sameBlocks(PeftAdapter source, PeftAdapter read) {
        String prefix = "model.layers.0.block_sparse_moe.experts.";
        int r = source.config().r();
        var all = org.nd4j.linalg.indexing.NDArrayIndex.all();
        var first = org.nd4j.linalg.indexing.NDArrayIndex.interval(0, r);
        var second = org.nd4j.linalg.indexing.NDArrayIndex.interval(r, 2 * r);
        for (String w : new String[] {"w1", "w3", "w2"}) {
            INDArray a = read.state().get(prefix + w + ".lora_A");   // [E, 2r, in]
            INDArray b = read.state().get(prefix + w + ".lora_B");   // [E, out, 2r]
            INDArray srcA = source.state().get(prefix + w + ".lora_A");
            INDArray srcB = source.state().get(prefix + w + ".lora_B");
            boolean up = w.equals("w3");
            INDArray own = up ? b.get(all, all, second) : b.get(all, all, first);
            INDArray other = up ? b.get(all, all, first) : b.get(all, all, second);
            assertEquals(0.0, other.amaxNumber().doubleValue(), w + ": the other block of B' is zero");
            if (srcA != null) {
                assertArrayEquals(floats(srcB), floats(own), w + ": B block");
                assertArrayEquals(floats(srcA), floats(a.get(all, up ? second : first, all)), w + ": A block");
            } else {
                assertEquals(0.0, own.amaxNumber().doubleValue(), w + " untargeted: zero");
            }
        }
    }

    private static float[] floats(INDArray array) {
        return array.dup('c').data().asFloat();
    }

    @Test
    void aFusedAdapterReadsBackToTheSameEval(@TempDir Path tmp) throws Exception {
        PeftAdapter adapter = randomAdapter(List.of(Projection.GATE, Projection.UP, Projection.DOWN), true, 2026);
        ModelConfig model = adapter.model();
        Path perExpert = tmp.resolve("per-expert");
        Path fused = tmp.resolve("fused");
        adapter.write(hadoop(perExpert), CONF);
        adapter.write(hadoop(fused), CONF, ExpertLayout.FUSED);

        JsonNode config = JSON.readTree(fused.resolve(PeftAdapter.CONFIG_FILE).toFile());
        assertEquals(8, config.get("r").asInt());
        assertEquals(16, config.get("lora_alpha").asInt());
        assertEquals("0.21.0", config.get("peft_version").asText());
        assertEquals("[]", config.get("target_modules").toString());
        assertEquals("[\"mlp.experts.gate_up_proj\",\"mlp.experts.down_proj\"]",
                config.get("target_parameters").toString());
        long e = model.num_experts;
        long d = model.hidden_size;
        long i = model.expert_intermediate_size;
        try (SafeTensorsFile file = SafeTensorsFile.open(fused.resolve(PeftAdapter.WEIGHTS_FILE))) {
            String layer = "base_model.model.model.layers.0.mlp.experts.";
            assertArrayEquals(new long[] {e * 8, d}, file.info(layer + "base_layer.lora_A.weight").shape());
            assertArrayEquals(new long[] {2 * i, 8 * e}, file.info(layer + "base_layer.lora_B.weight").shape());
            assertArrayEquals(new long[] {e * 8, i}, file.info(layer + "lora_A.weight").shape());
            assertArrayEquals(new long[] {d, 8 * e}, file.info(layer + "lora_B.weight").shape());
            assertTrue(file.has("base_model.model.model.layers.0.mlp.gate.weight"));
            long moeLayers = java.util.stream.IntStream.range(0, model.num_hidden_layers).filter(model::isMoeLayer).count();
            assertEquals(5 * moeLayers, file.names().size(), file.names().toString());
        }
        PeftAdapter read = PeftAdapter.read(hadoop(fused), CONF, model);
        assertEquals(adapter.config().scale(), read.config().scale());
        sameBlocks(adapter, read);
        assertSameEval(eval(perExpert), eval(fused));
    }

    @Test
    void untargetedProjectionsAreZeroBlocks(@TempDir Path tmp) throws Exception {
        PeftAdapter adapter = randomAdapter(List.of(Projection.GATE, Projection.DOWN), false, 7);
        Path perExpert = tmp.resolve("per-expert");
        Path fused = tmp.resolve("fused");
        adapter.write(hadoop(perExpert), CONF);
        adapter.write(hadoop(fused), CONF, ExpertLayout.FUSED);
        PeftAdapter read = PeftAdapter.read(hadoop(fused), CONF, adapter.model());
        INDArray upB = read.state().get("model.layers.0.block_sparse_moe.experts.w3.lora_B");
        assertEquals(0.0, upB.amaxNumber().doubleValue(), "w3 untrained: its rows of gate_up's B are zero");
        sameBlocks(adapter, read);
        assertSameEval(eval(perExpert), eval(fused));
    }
}
