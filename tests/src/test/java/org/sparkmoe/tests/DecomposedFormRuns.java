package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.driver.SparkMoe;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.ModelFolder;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.function.BiFunction;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The command runs {@link LowRankCpCommandTest} and {@link LowRankTrCommandTest} share, for one decomposed form
 * ({@code surgery lowrank --form cp|tr}) of the tiny Mixtral: converting, eval, the distillation checks and train with
 * a μMoE adapter beside the frozen experts.
 *
 * @param form    cp or tr
 * @param rank    --rank
 * @param tensors the form's three tensors of one projection in a layer (CP factors or TR cores), by name
 * @param tmp     where outputs go
 */
record DecomposedFormRuns(String form, int rank, BiFunction<CheckpointLayout, Projection, List<String>> tensors,
                          Path tmp) {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();

    static int sparkmoe(StringWriter err, String... args) {
        return SparkMoe.execute(new PrintWriter(err, true), args);
    }

    static void assertFails(int code, String expectedStart, String... args) {
        StringWriter err = new StringWriter();
        assertEquals(code, sparkmoe(err, args), err.toString());
        String text = err.toString();
        assertTrue(text.startsWith(expectedStart), text);
        if (code == 1) {
            assertEquals(1, text.strip().lines().count(), "one line: " + text);
        }
    }

    /** {@code surgery lowrank --form F --rank R --als-iterations 4} of the tiny Mixtral into tmp/name, with extra. */
    Path convert(String name, String... extra) {
        Path out = tmp.resolve(name);
        List<String> args = new ArrayList<>(List.of("surgery", "lowrank", "--form", form, "--rank", "" + rank,
                "--als-iterations", "4", "--model", Fixtures.tinyModel().toString(), "--out", out.toString(),
                "--master", "local[2]"));
        args.addAll(Arrays.asList(extra));
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, args.toArray(String[]::new)), err.toString());
        return out;
    }

    /** eval (window 128) of the model, with the adapter when not null: its perplexity, checked finite and above 1. */
    double evalPerplexity(Path model, Path adapter, String name) throws Exception {
        Path eval = tmp.resolve(name);
        List<String> args = new ArrayList<>(List.of("eval", "--model", model.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "128", "--master", "local[2]", "--out",
                eval.toString()));
        if (adapter != null) {
            args.addAll(List.of("--adapter", adapter.toString()));
        }
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, args.toArray(String[]::new)), err.toString());
        double ppl = JSON.readTree(eval.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1, "ppl " + ppl);
        return ppl;
    }

    /** {@code train} with LoRA on the decomposed model is refused in one line: only a μMoE adapter trains beside it. */
    void refusesLoraTraining(Path model) {
        assertFails(1, "train: error: a model of CP- or TR-form experts (surgery lowrank --form cp|tr) trains only "
                        + "a μMoE adapter beside its frozen experts (--adapter mumoe-cp|mumoe-tr): LoRA on its "
                        + "experts, --train-router and training its CP factors or TR cores are not built", "train",
                "--model", model.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(), "--steps", "1",
                "--out", tmp.resolve("never-train").toString());
    }

    /**
     * {@code train --adapter mumoe-cp} on the decomposed model (eval perplexity {@code plain}): the backward runs
     * through the frozen experts to their input; the adapter (beside q_proj, o_proj and every MoE block) is written,
     * and eval with it gives another perplexity (it starts as the base: its output factors are zero).
     */
    void trainsAMumoeAdapterBesideTheFrozenExperts(Path model, double plain) throws Exception {
        Path trained = tmp.resolve(form + "-mumoe");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "train", "--model", model.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--steps", "4", "--window", "64", "--batch-windows", "2",
                "--lr", "1e-2", "--master", "local[2]", "--partitions", "2", "--adapter", "mumoe-cp", "--mumoe-experts",
                "16", "--mumoe-rank", "4", "--mumoe-targets", "q_proj,o_proj,moe", "--out", trained.toString()),
                err.toString());
        assertFalse(Files.readAllLines(trained.resolve("train-log.jsonl")).isEmpty(), "one line per round");
        Path adapter = trained.resolve("adapter");
        assertTrue(Files.exists(adapter.resolve("adapter_model.safetensors")), "the μMoE adapter is written");
        double ppl = evalPerplexity(model, adapter, form + "-mumoe-eval.json");
        assertTrue(ppl != plain, "ppl " + ppl + " with the adapter, " + plain + " without");
    }

    /**
     * {@code --distill-steps} with the svd form's settings of {@link LowRankRecoveryTest}: every layer's output error
     * after is below the undistilled conversion's, every tensor of the form is trained (none equals the undistilled
     * one), the router stays frozen, 1 and 2 partitions write the same bytes, and eval runs the distilled model.
     */
    void distillationTrainsEveryTensorAndLowersEveryLayersErrorForAnyPartitioning() throws Exception {
        List<String> distill = List.of("--distill-steps", "30", "--distill-lr", "1e-2", "--distill-batch", "256",
                "--window", "128", "--distill-tokens", "512", "--data",
                Fixtures.corpus("sysadmin.txt") + "," + Fixtures.corpus("fortunes.txt"));
        List<String> two = new ArrayList<>(distill);
        two.addAll(List.of("--partitions", "2"));
        Path distilled = convert(form + "-distilled-p2", two.toArray(String[]::new));
        JsonNode report = JSON.readTree(distilled.resolve("surgery.json").toFile());
        assertEquals(form, report.get("settings").get("form").asText());
        assertEquals(30, report.get("settings").get("distill").get("steps").asInt());
        assertEquals(4, report.get("layers").size());
        for (JsonNode layer : report.get("layers")) {
            double before = layer.get("distill_rel_mse_before").asDouble();
            double after = layer.get("distill_rel_mse_after").asDouble();
            assertTrue(before > 0 && after < before, layer.toString());
            assertEquals(0.0, layer.get("distill_kept_start").asDouble(), layer.toString());
            assertEquals(2 * 512.0, layer.get("distill_tokens").asDouble(), "two files of 512 tokens");
        }
        List<String> one = new ArrayList<>(distill);
        one.addAll(List.of("--partitions", "1"));
        assertArrayEquals(Files.readAllBytes(convert(form + "-distilled-p1", one.toArray(String[]::new))
                .resolve("model.safetensors")), Files.readAllBytes(distilled.resolve("model.safetensors")));
        Path plain = convert(form + "-undistilled");
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(distilled.toUri()), CONF);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        try (Checkpoint a = Checkpoint.open(new org.apache.hadoop.fs.Path(plain.toUri()), CONF);
             Checkpoint b = Checkpoint.open(new org.apache.hadoop.fs.Path(distilled.toUri()), CONF)) {
            assertEquals(a.names(), b.names(), "the same tensors");
            for (Projection p : Projection.values()) {
                for (String name : tensors.apply(layout, p)) {
                    assertFalse(Arrays.equals(Flat.floats(a.readFloat(name)), Flat.floats(b.readFloat(name))),
                            name + " is trained");
                }
            }
            assertArrayEquals(Flat.floats(a.readFloat(layout.routerGate(1))), Flat.floats(b.readFloat(
                    layout.routerGate(1))), "the router stays frozen");
        }
        evalPerplexity(distilled, null, form + "-distilled-eval.json");
    }
}
