package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * {@code sparkmoe synth} through the real command line. Every real shape is big even with one layer (the embeddings
 * and head alone: Qwen1.5-MoE 151936 × 2048 × 2, 1.2 GB in bf16; Mixtral a 1.4B-parameter expert layer), so one
 * end-to-end run uses the smallest, {@code mistral-7b --layers 1}: 480M parameters, 0.96 GB in bf16, about 20 s here,
 * then {@code eval} on it over a few windows of the sysadmin corpus must give a finite perplexity. The shapes'
 * parameter counts are checked in executors' ModelShapeTest and the streaming writer in RandomWeightsTest.
 */
class SynthCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    private static void assertFailsWith(int exitCode, CliRun run, String... fragments) {
        assertEquals(exitCode, run.exitCode(), run.err());
        assertEquals(1, run.err().lines().count(), "one line: " + run.err());
        for (String fragment : fragments) {
            assertTrue(run.firstLine().contains(fragment), "expected '" + fragment + "' in: " + run.err());
        }
    }

    @Test
    void badFlagsAndInputsAreOneLineAndWriteNothing() throws IOException {
        String out = dir.resolve("out").toString();
        assertFailsWith(2, sparkmoe("synth", "--shape", "llama-70b", "--out", out),
                "unknown shape 'llama-70b'", "mixtral-8x7b, qwen1.5-moe-a2.7b, glm-4.5-air, mistral-7b", "sparkmoe synth --help");
        assertFailsWith(2, sparkmoe("synth", "--shape", "mistral-7b", "--dtype", "fp8", "--out", out),
                "unknown dtype 'fp8'", "bf16, f16, f32");
        assertFailsWith(2, sparkmoe("synth", "--shape", "mistral-7b", "--max-shard-size", "5 parsecs", "--out", out),
                "--max-shard-size", "5GB");
        assertFailsWith(2, sparkmoe("synth", "--shape", "mistral-7b"), "--out");
        assertFailsWith(1, sparkmoe("synth", "--shape", "mistral-7b", "--layers", "0", "--out", out),
                "synth: error: --layers must be ≥ 1, got 0");
        Path taken = Files.createDirectories(dir.resolve("taken"));
        Files.writeString(taken.resolve("keep.txt"), "mine");
        assertFailsWith(1, sparkmoe("synth", "--shape", "mistral-7b", "--layers", "1", "--out", taken.toString()),
                "--out", "already exists and is not an empty folder");
        assertEquals("mine", Files.readString(taken.resolve("keep.txt")));
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of("taken"), left.map(p -> p.getFileName().toString()).toList());
        }
    }

    @Test
    void helpNamesTheShapes() {
        PrintStream stdout = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        try {
            System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
            assertEquals(0, sparkmoe("synth", "--help").exitCode());
        } finally {
            System.setOut(stdout);
        }
        String help = captured.toString(StandardCharsets.UTF_8);
        for (String fragment : List.of("--shape", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "mistral-7b", "qwen3-30b-a3b",
                "Qwen/Qwen3-30B-A3B, 30.5B", "olmoe-1b-7b", "allenai/OLMoE-1B-7B-0924", "--layers",
                "--dtype", "--seed", "--max-shard-size", "Default: 5GB")) {
            assertTrue(help.contains(fragment), fragment + " in " + help);
        }
    }

    @Test
    void smallestRealShapeWritesARealSizedCheckpointThatEvalScores() throws IOException {
        Path model = Files.createDirectories(dir.resolve("mistral-1")); // an empty folder may be the target
        PrintStream stdout = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        CliRun synth;
        try {
            System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
            synth = sparkmoe("synth", "--shape", "mistral-7b", "--layers", "1", "--out", model.toString(),
                    "--max-shard-size", "300MB");
        } finally {
            System.setOut(stdout);
        }
        assertEquals(0, synth.exitCode(), synth.err());
        assertTrue(synth.err().contains("synth: 12/12 tensors, 0.96/0.96 GB"), synth.err());
        String summary = captured.toString(StandardCharsets.UTF_8);
        // 2 · 32000 · 4096 (embeddings, head) + 3 · 4096 (norms) + 4096 · (4096 + 2 · 1024 + 4096) (attention)
        // + 3 · 4096 · 14336 (MLP) = 480,260,096 parameters, two bytes each
        assertTrue(summary.contains("mistral-7b with 1 layers, 480,260,096 parameters, 960,520,192 bytes of bfloat16"),
                summary);

        JsonNode config = JSON.readTree(model.resolve("config.json").toFile());
        assertEquals(1, config.get("num_hidden_layers").asInt());
        assertEquals(32000, config.get("vocab_size").asInt());
        assertEquals(14336, config.get("intermediate_size").asInt());
        assertEquals("bfloat16", config.get("torch_dtype").asText());
        JsonNode index = JSON.readTree(model.resolve("model.safetensors.index.json").toFile());
        assertEquals(960_520_192L, index.get("metadata").get("total_size").asLong());
        // 300 MB shards: [embeddings 262 MB, norm, q], [k, v, o, norm, gate, up], [down, norm], [head 262 MB]
        assertEquals("model-00001-of-00004.safetensors",
                index.get("weight_map").get("model.embed_tokens.weight").asText());
        assertEquals("model-00004-of-00004.safetensors", index.get("weight_map").get("lm_head.weight").asText());
        for (String tokenizerFile : List.of("tokenizer.json", "tokenizer_config.json")) {
            assertArrayEquals(Files.readAllBytes(Fixtures.tinyModel().resolve(tokenizerFile)),
                    Files.readAllBytes(model.resolve(tokenizerFile)), tokenizerFile);
        }

        // a few windows of the sysadmin corpus: its first 1500 characters, cut at a line end
        String text = Files.readString(Fixtures.corpus("sysadmin.txt"));
        Path sample = Files.writeString(dir.resolve("sysadmin-head.txt"),
                text.substring(0, text.lastIndexOf('\n', 1500) + 1));
        Path report = dir.resolve("eval.json");
        CliRun eval = sparkmoe("eval", "--model", model.toString(), "--data", sample.toString(), "--split", "all",
                "--window", "64", "--master", "local[1]", "--out", report.toString());
        assertEquals(0, eval.exitCode(), eval.err());
        double ppl = JSON.readTree(report.toFile()).get("all").get("ppl").asDouble();
        // random weights with std 0.02 give near-uniform predictions: perplexity near V = 32000
        assertTrue(Double.isFinite(ppl) && ppl > 1000 && ppl < 1e6, "perplexity " + ppl);
        assertFalse(Files.exists(dir.resolve(".mistral-1.tmp")));
    }
}
