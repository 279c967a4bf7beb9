package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.SafeTensorsFile;

import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * {@code sparkmoe demo} end to end on a real local[2] SparkContext, with tiny settings: the last 40,000 characters of
 * each bundled corpus file (text the tiny model never trained on; its valid and test splits hold ~15 windows of 32
 * tokens), 6 LoRA steps, calibration on 64 tokens per file. Every output it lists parses, its base perplexities are a
 * separate {@code eval} run's to the bit, the LoRA helps the domain it was trained on, and bad input is refused.
 */
class DemoCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final List<String> FILES = List.of("fortunes.txt", "manuals.txt", "scripture.txt", "sysadmin.txt");
    private static final int WINDOW = 32;
    private static final int MAX_TOKENS = 64;
    private static final int STEPS = 6;

    @TempDir
    static Path tmp;
    private static Path corpus;
    private static Path out;
    private static CliRun demo;
    private static JsonNode summary;

    @BeforeAll
    static void runDemo() throws Exception {
        corpus = Files.createDirectories(tmp.resolve("corpus"));
        for (String name : FILES) {
            String text = Files.readString(Fixtures.corpus(name));
            Files.writeString(corpus.resolve(name), text.substring(text.length() - 40_000));
        }
        Files.writeString(corpus.resolve("notes.md"), "not a .txt file: the demo leaves it out");
        out = tmp.resolve("demo");
        demo = sparkmoe(demo(out.toString(), "--model", Fixtures.tinyModel().toString()));
        assertEquals(0, demo.exitCode(), demo.err());
        summary = JSON.readTree(out.resolve("summary.json").toFile());
    }

    /** demo with the tiny settings into {@code out}, then {@code more}. */
    private static List<String> demo(String out, String... more) {
        List<String> args = new ArrayList<>(List.of("demo", "--data", corpus.toString(), "--out", out,
                "--window", Integer.toString(WINDOW), "--train-steps", Integer.toString(STEPS),
                "--max-tokens-per-file", Integer.toString(MAX_TOKENS), "--master", "local[2]"));
        args.addAll(List.of(more));
        return args;
    }

    private static Path local(String uri) {
        return Path.of(URI.create(uri));
    }

    @Test
    void everyListedOutputExistsAndParses() throws Exception {
        JsonNode outputs = summary.get("outputs");
        assertEquals(List.of("calibration statistics", "calibration report", "expert activations", "eval base report",
                "train log", "LoRA adapter", "eval LoRA report", "surgery checkpoint", "eval topk report", "summary",
                "summary (JSON)"), names(outputs));

        JsonNode stats = JSON.readTree(local(outputs.get("calibration statistics").asText()).toFile());
        assertEquals(4, stats.get("layers").size());
        assertEquals(FILES.size() * MAX_TOKENS, stats.get("tokens").asLong(), "64 tokens of each file's valid split");
        assertEquals(FILES, names(stats.get("files")));
        String html = Files.readString(local(outputs.get("calibration report").asText()));
        assertTrue(html.startsWith("<!DOCTYPE html>") && html.contains("<svg"), html.substring(0, 100));
        try (SafeTensorsFile activations = SafeTensorsFile.open(local(outputs.get("expert activations").asText()))) {
            assertTrue(activations.has("layers.3.intermediate_abs_mean"), activations.names().toString());
        }

        for (String report : List.of("eval base report", "eval LoRA report", "eval topk report")) {
            JsonNode eval = JSON.readTree(local(outputs.get(report).asText()).toFile());
            assertEquals("test", eval.get("split").asText(), report);
            assertEquals(WINDOW, eval.get("window").asInt(), report);
            assertEquals(FILES, names(eval.get("files")), report);
        }
        assertEquals(outputs.get("LoRA adapter").asText(),
                JSON.readTree(local(outputs.get("eval LoRA report").asText()).toFile()).get("adapter").asText());
        assertEquals(3, JSON.readTree(local(outputs.get("eval topk report").asText()).toFile()).get("top_k").asInt());

        List<String> log = Files.readAllLines(local(outputs.get("train log").asText()));
        assertEquals(STEPS, log.size(), "one line per round, averaging every step");
        for (String line : log) {
            assertTrue(Double.isFinite(JSON.readTree(line).get("loss").asDouble()), line);
        }
        Path adapter = local(outputs.get("LoRA adapter").asText());
        assertEquals(16, JSON.readTree(adapter.resolve("adapter_config.json").toFile()).get("r").asInt());
        try (SafeTensorsFile weights = SafeTensorsFile.open(adapter.resolve("adapter_model.safetensors"))) {
            assertEquals(4 * 8 * 3 * 2, weights.names().size(), "layers × experts × (w1, w2, w3) × (A, B)");
        }

        Path topk = local(outputs.get("surgery checkpoint").asText());
        assertEquals(3, JSON.readTree(topk.resolve("config.json").toFile()).get("num_experts_per_tok").asInt());
        JsonNode surgery = JSON.readTree(topk.resolve("surgery.json").toFile());
        assertEquals("measured", surgery.get("settings").get("rescale").asText());
        for (int l = 0; l < 4; l++) {
            assertEquals(surgery.get("layers").get(l).get("alpha").asDouble(),
                    summary.get("surgery").get("alpha").get(l).asDouble());
        }
        assertTrue(Files.isRegularFile(topk.resolve("model.safetensors")));

        String text = Files.readString(local(outputs.get("summary").asText()));
        for (String name : FILES) {
            assertTrue(text.contains(name), text);
        }
        assertEquals(summary, JSON.readTree(local(outputs.get("summary (JSON)").asText()).toFile()));
    }

    @Test
    void basePerplexitiesAreASeparateEvalRunsExactly() throws Exception {
        Path report = tmp.resolve("eval.json");
        List<String> data = FILES.stream().map(f -> corpus.resolve(f).toString()).toList();
        CliRun eval = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", String.join(",", data),
                "--window", Integer.toString(WINDOW), "--master", "local[2]", "--out", report.toString());
        assertEquals(0, eval.exitCode(), eval.err());
        JsonNode separate = JSON.readTree(report.toFile());
        JsonNode base = summary.get("perplexity").get("base");
        for (String name : FILES) {
            assertEquals(separate.get("files").get(name).get("ppl").asDouble(), base.get(name).asDouble(), name);
        }
        assertEquals(separate.get("all").get("ppl").asDouble(), base.get("all").asDouble());
        JsonNode demoReport = JSON.readTree(local(summary.get("outputs").get("eval base report").asText()).toFile());
        assertEquals(separate.get("all").get("nll_sum").asDouble(), demoReport.get("all").get("nll_sum").asDouble());
    }

    /** 6 steps on the valid split of the sysadmin excerpt took its test perplexity from 71.4 to 59.0 when written. */
    @Test
    void theLoraLowersThePerplexityOfTheDomainItWasTrainedOn() {
        JsonNode ppl = summary.get("perplexity");
        double base = ppl.get("base").get("sysadmin.txt").asDouble();
        double lora = ppl.get("lora").get("sysadmin.txt").asDouble();
        assertTrue(lora < 0.95 * base, "LoRA " + lora + " against base " + base);
        assertEquals("sysadmin.txt", summary.get("train").get("file").asText());
    }

    @Test
    void refusesAnOutputFolderThatHoldsFiles() {
        CliRun again = sparkmoe(demo(out.toString(), "--model", Fixtures.tinyModel().toString()));
        assertEquals(1, again.exitCode());
        assertTrue(again.firstLine().startsWith("demo: error: --out ") && again.firstLine().contains("already holds files"),
                again.err());
        assertEquals(1, again.err().lines().count(), again.err());
    }

    @Test
    void aMissingModelIsOneLineAndWritesNothing() {
        Path target = tmp.resolve("never");
        Path missing = tmp.resolve("no-such-model");
        CliRun run = sparkmoe(demo(target.toString(), "--model", missing.toString()));
        assertEquals(1, run.exitCode());
        assertEquals(1, run.err().lines().count(), run.err());
        assertTrue(run.firstLine().startsWith("demo: error: model folder not found: ")
                && run.firstLine().contains(missing.toString()) && run.firstLine().contains("--model DIR"), run.err());
        assertFalse(Files.exists(target));

        CliRun domain = sparkmoe(demo(target.toString(), "--model", Fixtures.tinyModel().toString(),
                "--train-file", "poems.txt"));
        assertEquals(1, domain.exitCode());
        assertTrue(domain.firstLine().startsWith("demo: error: --train-file poems.txt is not one of the .txt files in ")
                && domain.firstLine().endsWith(": " + String.join(", ", FILES)), domain.err());
        assertFalse(Files.exists(target));
    }

    @Test
    void badFlagsExitTwo() {
        for (List<String> args : List.of(List.of("demo", "--train-steps", "many"), List.of("demo", "--no-such-flag"),
                List.of("demo", "--top-k"))) {
            CliRun run = sparkmoe(args);
            assertEquals(2, run.exitCode(), args + ": " + run.err());
            assertTrue(run.firstLine().startsWith("demo: ") && run.firstLine().contains("sparkmoe demo --help"),
                    run.err());
        }
    }

    private static List<String> names(JsonNode object) {
        List<String> names = new ArrayList<>();
        object.fieldNames().forEachRemaining(names::add);
        return names;
    }
}
