package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ModelFolder;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.sparkmoe.tests.FixtureCommands.*;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * The commands on the tiny gpt_oss fixtures (see {@link GptOssParityTest}), end to end through the command line:
 * calibrate; surgery topk, reduce and merge-dense, each output (gpt-oss's fused layout) loading in eval; lowrank
 * (biases kept exactly; at full rank with top-1 the original's logits); --layout per-expert refused in one line;
 * retrain-router fitting the router's weight and bias (also through reduce --expert-map / --router); the demo; train with the router lowering the loss and writing a
 * fused PEFT adapter (target_parameters, router weight and bias) and a merged checkpoint, the adapter read back by
 * merge and eval --adapter; the MXFP4 fixture's surgery output in bf16.
 */
class GptOssCommandsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Configuration CONF = new Configuration();

    private static void assertFused(Path dir, int experts) {
        try (SafeTensorsFile f = SafeTensorsFile.open(dir.resolve("model.safetensors"))) {
            assertEquals(experts, f.info(FusedExperts.gateUp(0)).shape()[0], dir + ": gate_up_proj [E, D, 2I]");
            assertEquals(32, f.info(FusedExperts.gateUp(0)).shape()[1], dir + ": gpt-oss's orientation");
            assertTrue(f.has(FusedExperts.gateUpBias(0)) && f.has(FusedExperts.downBias(0)), dir + ": biases");
            assertTrue(f.has("model.layers.0.mlp.router.bias"), dir + ": router bias");
            assertTrue(f.names().stream().noneMatch(n -> n.contains(".experts.0.")), dir + ": no per-expert keys");
        }
    }

    @Test
    void calibrateAndSurgeriesRunAndTheirOutputsEvaluate(@TempDir Path tmp) throws Exception {
        Path m = model("gpt-oss-tiny");
        JsonNode stats = FixtureCommands.calibrate(m, ModelFolder.readConfig(hadoop(m), CONF), tmp);
        assertEquals(8, stats.get("experts").asInt());
        Path calib = tmp.resolve("calib");
        String statsFile = calib.resolve("router-stats.json").toString();

        Path topk = tmp.resolve("topk");
        ok("surgery", "topk", "--top-k", "1", "--rescale", "measured", "--model", m.toString(), "--out",
                topk.toString(), "--stats", statsFile, "--master", "local[2]");
        assertEquals(1, ModelFolder.readConfig(hadoop(topk), CONF).num_experts_per_tok);
        assertFused(topk, 8);
        ppl(topk, tmp);

        Path reduce = tmp.resolve("reduce");
        ok("surgery", "reduce", "--experts", "3", "--by", "routing", "--model", m.toString(), "--out",
                reduce.toString(), "--stats", statsFile, "--master", "local[2]");
        assertEquals(3, ModelFolder.readConfig(hadoop(reduce), CONF).num_experts);
        assertFused(reduce, 3);
        ppl(reduce, tmp);

        Path dense = tmp.resolve("dense");
        ok("surgery", "merge-dense", "--method", "router-weighted", "--model", m.toString(), "--out",
                dense.toString(), "--stats", statsFile, "--master", "local[2]");
        ModelConfig merged = ModelFolder.readConfig(hadoop(dense), CONF);
        assertEquals(ModelConfig.ModelType.GPT_OSS, merged.modelType);
        assertEquals(1, merged.num_experts);
        assertEquals(1, merged.num_experts_per_tok);
        assertFused(dense, 1);
        ppl(dense, tmp);

        Path lowrank = tmp.resolve("lowrank");
        ok("surgery", "lowrank", "--rank", "8", "--model", m.toString(), "--out", lowrank.toString(),
                "--master", "local[2]");
        assertEquals(8, ModelFolder.readConfig(hadoop(lowrank), CONF).low_rank_experts_rank);
        try (Checkpoint base = Checkpoint.open(hadoop(m), CONF); Checkpoint low = Checkpoint.open(hadoop(lowrank), CONF)) {
            for (String name : List.of(FusedExperts.gateUpBias(0), FusedExperts.downBias(2))) {
                assertArrayEquals(base.readFloat(name).data().asFloat(), low.readFloat(name).data().asFloat(), 0f,
                        name + " kept exactly");
            }
        }
        System.out.printf("gpt-oss-tiny: ppl lowrank R=8 %.4f%n", ppl(lowrank, tmp));
        CliRun perExpert = sparkmoe("surgery", "topk", "--top-k", "2", "--rescale", "none", "--layout", "per-expert",
                "--model", m.toString(), "--out", tmp.resolve("per-expert").toString(), "--master", "local[2]");
        assertEquals(1, perExpert.exitCode());
        assertTrue(perExpert.err().contains("gpt_oss has no per-expert layout"), perExpert.err());
    }

    /**
     * retrain-router fits gpt-oss's router weight and bias to the exported teacher distributions: the loss on the
     * router data falls over the epochs, router.safetensors and the checkpoint hold both, the bias moved from its
     * zero start, and the checkpoint evaluates. Through reduce (8 → 4), --expert-map and reduce --router the grouped
     * weight and bias replace the merged ones.
     */
    @Test
    void retrainRouterFitsTheWeightAndTheBias(@TempDir Path tmp) throws Exception {
        Path m = model("gpt-oss-tiny");
        Path calib = tmp.resolve("calib");
        ok("calibrate", "--model", m.toString(), "--data", Fixtures.corpus("sysadmin.txt") + ","
                + Fixtures.corpus("scripture.txt"), "--window", "64", "--max-tokens-per-file", "512",
                "--export-router-data", "--master", "local[2]", "--out", calib.toString());
        String routerData = calib.resolve("router-data").toString();
        Path out = tmp.resolve("router");
        ok("retrain-router", "--model", m.toString(), "--router-data", routerData, "--epochs", "4",
                "--learning-rate", "0.01", "--out", out.toString(), "--master", "local[2]");
        JsonNode report = JSON.readTree(out.resolve("retrain-router.json").toFile());
        for (JsonNode layer : report.get("layers")) {
            JsonNode scores = layer.get("epoch_scores");
            double first = scores.get(0).asDouble();
            double last = scores.get(scores.size() - 1).asDouble();
            System.out.printf("gpt-oss-tiny retrain-router layer %d: loss %.4f → %.4f, top-3 agreement %.3f%n",
                    layer.get("layer").asInt(), first, last, layer.get("agreement").asDouble());
            assertTrue(last < first, "layer " + layer.get("layer") + ": loss " + scores);
        }
        String bias = "model.layers.1.mlp.router.bias";
        try (SafeTensorsFile gates = SafeTensorsFile.open(out.resolve("router.safetensors"));
             Checkpoint written = Checkpoint.open(hadoop(out), CONF)) {
            float[] fitted = gates.readFloat(bias).data().asFloat();
            assertArrayEquals(fitted, written.readFloat(bias).data().asFloat(), 0f, "the checkpoint holds the bias");
            assertTrue(gates.readFloat(bias).amaxNumber().doubleValue() > 1e-3, "the bias moved from 0");
            assertFalse(Arrays.equals(tensor(m, bias), fitted), "the bias was refitted");
            assertArrayEquals(gates.readFloat("model.layers.1.mlp.router.weight").data().asFloat(),
                    written.readFloat("model.layers.1.mlp.router.weight").data().asFloat(), 0f);
        }
        ModelFolder.load(hadoop(out), CONF);
        assertFused(out, 8);
        ppl(out, tmp);

        Path reduced = tmp.resolve("reduce");
        ok("surgery", "reduce", "--experts", "4", "--by", "weights", "--model", m.toString(), "--out",
                reduced.toString(), "--master", "local[2]");
        Path grouped = tmp.resolve("grouped");
        ok("retrain-router", "--model", m.toString(), "--router-data", routerData, "--epochs", "2",
                "--expert-map", reduced.resolve("expert-map.json").toString(), "--out", grouped.toString(),
                "--master", "local[2]");
        Path again = tmp.resolve("reduce-router");
        ok("surgery", "reduce", "--experts", "4", "--by", "weights", "--model", m.toString(), "--out",
                again.toString(), "--router", grouped.resolve("router.safetensors").toString(), "--master", "local[2]");
        try (SafeTensorsFile gates = SafeTensorsFile.open(grouped.resolve("router.safetensors"))) {
            assertArrayEquals(gates.readFloat(bias).data().asFloat(), tensor(again, bias), 0f,
                    "reduce --router writes the retrained bias");
        }
        ppl(again, tmp);
    }

    private static float[] tensor(Path model, String name) {
        try (Checkpoint c = Checkpoint.open(hadoop(model), CONF)) {
            return c.readFloat(name).data().asFloat();
        }
    }

    /** The demo (calibrate, topk with the measured rescale, train, eval) on gpt-oss. */
    @Test
    void demoRuns(@TempDir Path tmp) throws Exception {
        assertEquals("measured", FixtureCommands.demoRescale("gpt-oss-tiny", tmp));
    }

    @Test
    void trainLowersTheLossAndWritesAPeftAdapterOnTheFusedParameters(@TempDir Path tmp) throws Exception {
        Path m = model("gpt-oss-tiny");
        Path out = tmp.resolve("train");
        ok("train", "--model", m.toString(), "--data", Fixtures.sysadminExcerpt(tmp).toString(), "--window", "32",
                "--steps", "24", "--batch-windows", "4", "--lr", "2e-2", "--rank", "4", "--alpha", "8",
                "--targets", "gate_proj,up_proj,down_proj", "--train-router", "--checkpoint-every", "100", "--merge",
                "--master", "local[2]", "--out", out.toString());
        List<String> log = Files.readAllLines(out.resolve("train-log.jsonl"));
        double first = JSON.readTree(log.get(0)).get("loss").asDouble();
        double last = JSON.readTree(log.get(log.size() - 1)).get("loss").asDouble();
        System.out.printf("gpt-oss-tiny: train loss %.4f → %.4f over %d rounds%n", first, last, log.size());
        assertTrue(last < first, "loss " + first + " → " + last);

        JsonNode config = JSON.readTree(out.resolve("adapter/adapter_config.json").toFile());
        assertEquals("[\"mlp.experts.gate_up_proj\",\"mlp.experts.down_proj\"]", config.get("target_parameters").toString());
        assertEquals("[\"mlp.router\"]", config.get("modules_to_save").toString());
        assertEquals(8, config.get("r").asInt(), "rank 2r: gate and up share gate_up_proj");
        try (SafeTensorsFile adapter = SafeTensorsFile.open(out.resolve("adapter/adapter_model.safetensors"))) {
            String prefix = "base_model.model.model.layers.0.mlp.";
            assertArrayEquals(new long[] {8 * 8, 32}, adapter.info(prefix + "experts.base_layer.lora_A.weight").shape());
            assertArrayEquals(new long[] {64, 8 * 8}, adapter.info(prefix + "experts.base_layer.lora_B.weight").shape());
            assertArrayEquals(new long[] {8 * 8, 32}, adapter.info(prefix + "experts.lora_A.weight").shape());
            assertArrayEquals(new long[] {8}, adapter.info(prefix + "router.bias").shape());
            assertArrayEquals(new long[] {8, 32}, adapter.info(prefix + "router.weight").shape());
        }
        Path merged = out.resolve("merged");
        assertFused(merged, 8);
        try (Checkpoint base = Checkpoint.open(hadoop(m), CONF); Checkpoint trained = Checkpoint.open(hadoop(merged), CONF)) {
            for (String name : List.of(FusedExperts.gateUp(0), "model.layers.0.mlp.router.bias")) {
                assertFalse(Arrays.equals(base.readFloat(name).data().asFloat(), trained.readFloat(name).data().asFloat()),
                        name + " moved");
            }
        }
        double mergedPpl = ppl(merged, tmp);

        // the written adapter read back: merge gives train --merge's checkpoint (up to the order of float32 sums in
        // the rank-2r product), eval --adapter (unmerged) its perplexity
        Path again = tmp.resolve("merge");
        ok("merge", "--model", m.toString(), "--adapter", out.resolve("adapter").toString(), "--out", again.toString());
        try (Checkpoint a = Checkpoint.open(hadoop(merged), CONF); Checkpoint b = Checkpoint.open(hadoop(again), CONF)) {
            assertEquals(a.names(), b.names());
            for (String name : a.names()) {
                double diff = a.readFloat(name).sub(b.readFloat(name)).amaxNumber().doubleValue();
                assertTrue(diff <= 1e-6, name + ": max |Δ| " + diff);
            }
        }
        Path evalOut = tmp.resolve("adapter-eval.json");
        ok("eval", "--model", m.toString(), "--adapter", out.resolve("adapter").toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "64", "--master", "local[2]", "--out",
                evalOut.toString());
        double adapterPpl = JSON.readTree(evalOut.toFile()).get("all").get("ppl").asDouble();
        assertEquals(mergedPpl, adapterPpl, 1e-5 * mergedPpl, "the adapter unmerged evaluates as merged");
    }

    /**
     * lowrank at full rank (R = 32 = hidden = intermediate) on the fixture with top-1 routing (its config edited):
     * each token's FFN is its one expert's weights and biases with weight 1, so the logits equal the original's. With
     * the fixture's top-3 the low-rank form mixes the three experts' weights instead of their outputs, and the logits
     * differ.
     */
    @Test
    void lowrankAtFullRankWithTopOneEqualsTheOriginal(@TempDir Path tmp) throws Exception {
        Path top1 = tmp.resolve("top1");
        Files.createDirectories(top1);
        try (var files = Files.list(model("gpt-oss-tiny"))) {
            for (Path f : files.toList()) {
                Files.copy(f, top1.resolve(f.getFileName()));
            }
        }
        com.fasterxml.jackson.databind.node.ObjectNode config =
                (com.fasterxml.jackson.databind.node.ObjectNode) JSON.readTree(top1.resolve("config.json").toFile());
        config.put("num_experts_per_tok", 1);
        JSON.writeValue(top1.resolve("config.json").toFile(), config);
        Path ids = model("gpt-oss-tiny").resolveSibling("gpt-oss-tiny-reference.safetensors");
        double[] diff = new double[2];
        int i = 0;
        for (Path original : List.of(top1, model("gpt-oss-tiny"))) {
            Path low = tmp.resolve("low-" + i);
            ok("surgery", "lowrank", "--rank", "32", "--model", original.toString(), "--out", low.toString(),
                    "--master", "local[2]");
            ok("logits", "--model", original.toString(), "--input-ids", ids.toString(), "--out",
                    tmp.resolve("a" + i + ".safetensors").toString());
            ok("logits", "--model", low.toString(), "--input-ids", ids.toString(), "--out",
                    tmp.resolve("b" + i + ".safetensors").toString());
            try (SafeTensorsFile a = SafeTensorsFile.open(tmp.resolve("a" + i + ".safetensors"));
                 SafeTensorsFile b = SafeTensorsFile.open(tmp.resolve("b" + i + ".safetensors"))) {
                var logits = a.readFloat("logits");
                diff[i] = logits.sub(b.readFloat("logits")).amaxNumber().doubleValue()
                        / logits.amaxNumber().doubleValue();
            }
            i++;
        }
        System.out.printf("gpt-oss-tiny lowrank R=32: max |Δ logits| / max |logits| %.3g at top-1, %.3g at top-3%n",
                diff[0], diff[1]);
        assertTrue(diff[0] <= 1e-5, "top-1: " + diff[0]);
        assertTrue(diff[1] > 1e-3, "top-3 mixes weights, not outputs: " + diff[1]);
    }

    /**
     * lowrank with distillation on gpt-oss (teacher and student with biases, clamped gate and router bias) lowers
     * every layer's relative output error; both outputs evaluate; train on the low-rank model (LoRA experts and router with its bias) lowers
     * its loss and writes OUT/model, which keeps the expert biases and evaluates.
     */
    @Test
    void lowrankDistillsAndItsModelTrains(@TempDir Path tmp) throws Exception {
        Path m = model("gpt-oss-tiny");
        Path data = Fixtures.sysadminExcerpt(tmp);
        Path plain = tmp.resolve("plain");
        ok("surgery", "lowrank", "--rank", "8", "--model", m.toString(), "--out", plain.toString(),
                "--master", "local[2]");
        Path distilled = tmp.resolve("distilled");
        ok("surgery", "lowrank", "--rank", "8", "--model", m.toString(), "--out", distilled.toString(),
                "--distill-steps", "40", "--data", data.toString(), "--window", "64", "--distill-tokens", "1024",
                "--distill-batch", "256", "--master", "local[2]");
        JsonNode report = JSON.readTree(distilled.resolve("surgery.json").toFile());
        assertEquals(3, report.get("layers").size());
        for (JsonNode layer : report.get("layers")) {
            double before = layer.get("distill_rel_mse_before").asDouble();
            double after = layer.get("distill_rel_mse_after").asDouble();
            System.out.printf("gpt-oss-tiny lowrank R=8 layer %d: distill rel. MSE %.4f → %.4f%n",
                    layer.get("layer").asInt(), before, after);
            assertTrue(before > 0 && after < before, layer.toString());
        }
        System.out.printf("gpt-oss-tiny lowrank R=8: ppl %.2f, distilled %.2f%n", ppl(plain, tmp), ppl(distilled, tmp));

        Path out = tmp.resolve("train");
        ok("train", "--model", distilled.toString(), "--data", data.toString(), "--window", "32", "--steps", "8",
                "--batch-windows", "4", "--lr", "1e-2", "--train-router", "--checkpoint-every", "100",
                "--master", "local[2]", "--out", out.toString());
        List<String> log = Files.readAllLines(out.resolve("train-log.jsonl"));
        double first = JSON.readTree(log.get(0)).get("loss").asDouble();
        double last = JSON.readTree(log.get(log.size() - 1)).get("loss").asDouble();
        System.out.printf("gpt-oss-tiny low-rank: train loss %.4f → %.4f%n", first, last);
        assertTrue(last < first, "loss " + first + " → " + last);
        Path trained = out.resolve("model");
        try (Checkpoint a = Checkpoint.open(hadoop(distilled), CONF); Checkpoint b = Checkpoint.open(hadoop(trained), CONF)) {
            assertArrayEquals(a.readFloat(FusedExperts.gateUpBias(1)).data().asFloat(),
                    b.readFloat(FusedExperts.gateUpBias(1)).data().asFloat(), 0f, "expert biases kept");
            assertFalse(Arrays.equals(a.readFloat("model.layers.1.mlp.router.bias").data().asFloat(),
                    b.readFloat("model.layers.1.mlp.router.bias").data().asFloat()), "router bias trained");
        }
        ppl(trained, tmp);
    }

    /** A released (MXFP4) checkpoint's surgery output: bf16, experts widened, no quantization_config. */
    @Test
    void mxfp4InputIsWrittenInBf16(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("topk");
        ok("surgery", "topk", "--top-k", "2", "--rescale", "none", "--model", model("gpt-oss-tiny-mxfp4").toString(),
                "--out", out.toString(), "--master", "local[2]");
        assertFalse(JSON.readTree(out.resolve("config.json").toFile()).has("quantization_config"));
        try (SafeTensorsFile f = SafeTensorsFile.open(out.resolve("model.safetensors"))) {
            assertEquals(DType.BF16, f.info(FusedExperts.gateUp(0)).dtype());
            assertFalse(f.has(FusedExperts.gateUp(0) + "_blocks"));
        }
        assertFused(out, 8);
        ppl(out, tmp);
    }
}
