package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.SparkMoe;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code sparkmoe surgery lowrank --form tr} end to end on the tiny Mixtral: the TR checkpoint holds exactly what its
 * config implies, surgery.json reports errors, sweeps and parameters, any partitioning writes the same bytes, eval
 * runs it; --distill-steps trains its cores; train trains a μMoE adapter beside its frozen experts; and what is not
 * built (LoRA or router training on it) or does not apply (--stats) fails with one line.
 */
class LowRankTrCommandTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int E = 8;
    private static final int R = 4;

    @TempDir
    static Path tmp;

    private static int sparkmoe(StringWriter err, String... args) {
        return SparkMoe.execute(new PrintWriter(err, true), args);
    }

    private static Path tr(String name, String... extra) {
        Path out = tmp.resolve(name);
        List<String> args = new ArrayList<>(List.of("surgery", "lowrank", "--form", "tr", "--rank", "" + R,
                "--als-iterations", "4", "--model", Fixtures.tinyModel().toString(), "--out", out.toString(),
                "--master", "local[2]"));
        args.addAll(Arrays.asList(extra));
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, args.toArray(String[]::new)), err.toString());
        return out;
    }

    private static void assertFails(int code, String expectedStart, String... args) {
        StringWriter err = new StringWriter();
        assertEquals(code, sparkmoe(err, args), err.toString());
        String text = err.toString();
        assertTrue(text.startsWith(expectedStart), text);
        if (code == 1) {
            assertEquals(1, text.strip().lines().count(), "one line: " + text);
        }
    }

    @Test
    void writesTrExpertsThatEvalRunsIdenticallyForAnyPartitioning() throws Exception {
        Path out = tr("tr-4");
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(out.toUri()), CONF);
        assertTrue(config.hasTrExperts());
        assertEquals(R, config.low_rank_experts_rank);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        try (Checkpoint c = Checkpoint.open(new org.apache.hadoop.fs.Path(out.toUri()), CONF)) {
            assertEquals(ModelSchema.expected(config).keySet(), c.names());
            assertArrayEquals(new long[] {R, E, R}, c.shape(layout.trCore(2, Projection.DOWN, TrCore.EXPERTS)));
            assertArrayEquals(new long[] {R, 256, R}, c.shape(layout.trCore(2, Projection.DOWN, TrCore.IN)));
            assertArrayEquals(new long[] {R, 128, R}, c.shape(layout.trCore(2, Projection.DOWN, TrCore.OUT)));
            assertFalse(c.names().contains(layout.expert(0, 0, Projection.GATE)), "no full experts left");
        }
        JsonNode report = JSON.readTree(out.resolve("surgery.json").toFile());
        assertEquals("tr", report.get("settings").get("form").asText());
        JsonNode layer = report.get("layers").get(3);
        double error = layer.get("w3_rel_error").asDouble();
        assertTrue(error > 0 && error < 1, "w3 error " + error);
        assertEquals(4.0, layer.get("w3_als_sweeps").asDouble(), "tolerance 1e-6 does not stop 4 sweeps here");
        assertEquals(E * 256.0 * 128, layer.get("w2_params_before").asDouble());
        assertEquals(R * R * (E + 128.0 + 256), layer.get("w2_params_after").asDouble());
        Path one = tr("tr-4-p1", "--partitions", "1");
        assertArrayEquals(Files.readAllBytes(one.resolve("model.safetensors")),
                Files.readAllBytes(out.resolve("model.safetensors")));
        Path eval = tmp.resolve("tr-4-eval.json");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "eval", "--model", out.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "128", "--master", "local[2]",
                "--out", eval.toString()), err.toString());
        double ppl = JSON.readTree(eval.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1, "ppl " + ppl);
        assertFails(1, "train: error: a model of CP- or TR-form experts (surgery lowrank --form cp|tr) trains only "
                        + "a μMoE adapter beside its frozen experts (--adapter mumoe-cp|mumoe-tr): LoRA on its "
                        + "experts, --train-router and training its CP factors or TR cores are not built", "train",
                "--model", out.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(), "--steps", "1",
                "--out", tmp.resolve("never-train").toString());
        trainsAMumoeAdapterBesideTheFrozenTrExperts(out, ppl);
    }

    /**
     * {@code train --adapter mumoe-cp} on the TR model {@code trModel} (eval perplexity {@code plain}): the backward
     * runs through the frozen TR experts to their input; the adapter (beside q_proj, o_proj and every MoE block) is
     * written, and eval with it gives another perplexity (it starts as the base: its output factors are zero).
     */
    private static void trainsAMumoeAdapterBesideTheFrozenTrExperts(Path trModel, double plain) throws Exception {
        Path trained = tmp.resolve("tr-4-mumoe");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "train", "--model", trModel.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--steps", "4", "--window", "64", "--batch-windows", "2",
                "--lr", "1e-2", "--master", "local[2]", "--partitions", "2", "--adapter", "mumoe-cp", "--mumoe-experts",
                "16", "--mumoe-rank", "4", "--mumoe-targets", "q_proj,o_proj,moe", "--out", trained.toString()),
                err.toString());
        assertFalse(Files.readAllLines(trained.resolve("train-log.jsonl")).isEmpty(), "one line per round");
        Path adapter = trained.resolve("adapter");
        assertTrue(Files.exists(adapter.resolve("adapter_model.safetensors")), "the μMoE adapter is written");
        Path eval = tmp.resolve("tr-4-mumoe-eval.json");
        assertEquals(0, sparkmoe(err, "eval", "--model", trModel.toString(), "--adapter", adapter.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "128", "--master", "local[2]",
                "--out", eval.toString()), err.toString());
        double ppl = JSON.readTree(eval.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1 && ppl != plain, "ppl " + ppl + " with the adapter, " + plain
                + " without");
    }

    /**
     * {@code --distill-steps} on the tr form, with the settings of {@link LowRankCpCommandTest}'s cp distillation:
     * every layer's output error after is below the undistilled conversion's, every TR core is trained (none equals
     * the undistilled one), 1 and 2 partitions write the same bytes, and eval runs the distilled model.
     */
    @Test
    void distillationTrainsEveryCoreAndLowersEveryLayersErrorForAnyPartitioning() throws Exception {
        List<String> distill = List.of("--distill-steps", "30", "--distill-lr", "1e-2", "--distill-batch", "256",
                "--window", "128", "--distill-tokens", "512", "--data",
                Fixtures.corpus("sysadmin.txt") + "," + Fixtures.corpus("fortunes.txt"));
        List<String> two = new ArrayList<>(distill);
        two.addAll(List.of("--partitions", "2"));
        Path distilled = tr("tr-4-distilled-p2", two.toArray(String[]::new));
        JsonNode report = JSON.readTree(distilled.resolve("surgery.json").toFile());
        assertEquals("tr", report.get("settings").get("form").asText());
        assertEquals(30, report.get("settings").get("distill").get("steps").asInt());
        assertEquals(4, report.get("layers").size());
        for (JsonNode layer : report.get("layers")) {
            double before = layer.get("distill_rel_mse_before").asDouble();
            double after = layer.get("distill_rel_mse_after").asDouble();
            assertTrue(before > 0 && after < before, layer.toString());
            assertEquals(2 * 512.0, layer.get("distill_tokens").asDouble(), "two files of 512 tokens");
        }
        List<String> one = new ArrayList<>(distill);
        one.addAll(List.of("--partitions", "1"));
        assertArrayEquals(Files.readAllBytes(tr("tr-4-distilled-p1", one.toArray(String[]::new))
                .resolve("model.safetensors")), Files.readAllBytes(distilled.resolve("model.safetensors")));
        Path plain = tr("tr-4-undistilled");
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(distilled.toUri()), CONF);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        try (Checkpoint a = Checkpoint.open(new org.apache.hadoop.fs.Path(plain.toUri()), CONF);
             Checkpoint b = Checkpoint.open(new org.apache.hadoop.fs.Path(distilled.toUri()), CONF)) {
            assertEquals(a.names(), b.names(), "the same tensors");
            for (Projection p : Projection.values()) {
                for (TrCore c : TrCore.values()) {
                    String name = layout.trCore(1, p, c);
                    assertFalse(Arrays.equals(Flat.floats(a.readFloat(name)), Flat.floats(b.readFloat(name))),
                            name + " is trained");
                }
            }
            assertArrayEquals(Flat.floats(a.readFloat(layout.routerGate(1))), Flat.floats(b.readFloat(
                    layout.routerGate(1))), "the router stays frozen");
        }
        Path eval = tmp.resolve("tr-4-distilled-eval.json");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "eval", "--model", distilled.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "128", "--master", "local[2]",
                "--out", eval.toString()), err.toString());
        double ppl = JSON.readTree(eval.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1, "ppl " + ppl);
    }

    @Test
    void whatIsNotBuiltOrDoesNotApplyFailsWithOneLine() {
        String model = Fixtures.tinyModel().toString();
        String out = tmp.resolve("never").toString();
        assertFails(1, "lowrank: error: --data is read only by the distillation: add --distill-steps N", "surgery",
                "lowrank", "--form", "tr", "--rank", "8", "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--model", model, "--out", out);
        assertFails(1, "lowrank: error: --stats is read only by --form svd", "surgery", "lowrank", "--form", "tr",
                "--rank", "8", "--stats", "x", "--model", model, "--out", out);
        assertFails(1, "lowrank: error: --rank must be in [1, 256] for --form tr (max of num_experts 8, hidden_size "
                + "128 and intermediate_size 256: an exact tensor ring exists at that rank), got 257", "surgery",
                "lowrank", "--form", "tr", "--rank", "257", "--model", model, "--out", out);
        assertFails(2, "lowrank: Invalid value for option '--form': 'tucker' (expected one of cp, svd, tr)", "surgery",
                "lowrank", "--form", "tucker", "--rank", "8", "--model", model, "--out", out);
        assertFalse(Files.exists(tmp.resolve("never")));
    }
}
