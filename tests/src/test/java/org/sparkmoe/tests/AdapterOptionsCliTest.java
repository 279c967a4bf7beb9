package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The adapter options on the command line (each command starts its own Spark, so no shared SparkContext here):
 * {@code --peft-version} settles an ambiguous fused PEFT adapter for eval, and {@code train --adapter-format fused}
 * writes an adapter that eval accepts.
 */
class AdapterOptionsCliTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();

    private static Path reference(String relative) {
        return Fixtures.root().resolve("tests/src/test/resources/reference").resolve(relative);
    }

    private static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    /** The PEFT 0.21 gate_up_proj adapter of the tiny Qwen3-MoE (D = 2I) with its peft_version removed. */
    private static Path unversionedQwen3Adapter(Path tmp) throws Exception {
        Path adapter = reference("fused-peft-qwen3");
        Path unversioned = Files.createDirectories(tmp.resolve("unversioned"));
        Files.copy(adapter.resolve("adapter_model.safetensors"), unversioned.resolve("adapter_model.safetensors"));
        Files.writeString(unversioned.resolve("adapter_config.json"), Files.readString(
                adapter.resolve("adapter_config.json")).replaceAll("\\s*\"peft_version\": \"[^\"]*\",", ""));
        return unversioned;
    }

    private static List<String> evalArgs(Path model, Path adapter, Path out) {
        return new java.util.ArrayList<>(List.of("eval", "--model", model.toString(), "--adapter", adapter.toString(),
                "--data", Fixtures.corpus("sysadmin.txt").toString(), "--window", "64", "--master", "local[2]",
                "--out", out.toString()));
    }

    /** The report's numbers: per file and over all (the model and adapter paths left out). */
    private static String numbers(Path report) throws Exception {
        com.fasterxml.jackson.databind.JsonNode root = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(report.toFile());
        return root.get("files").toString() + root.get("all").toString();
    }

    @Test
    void peftVersionSettlesAnAmbiguousAdapterOnTheCli(@TempDir Path tmp) throws Exception {
        Path model = reference("qwen3-moe-tiny");
        Path unversioned = unversionedQwen3Adapter(tmp);

        CliRun refused = CliRun.sparkmoe(evalArgs(model, unversioned, tmp.resolve("refused.json")));
        assertEquals(1, refused.exitCode(), refused.err());
        assertEquals(1, refused.err().lines().count(), refused.err());
        assertTrue(refused.err().contains("ambiguous LoRA shapes") && refused.err().contains("--peft-version"),
                refused.err());

        List<String> badVersion = evalArgs(model, unversioned, tmp.resolve("bad.json"));
        badVersion.addAll(List.of("--peft-version", "latest"));
        CliRun bad = CliRun.sparkmoe(badVersion);
        assertEquals(1, bad.exitCode(), bad.err());
        assertEquals(1, bad.err().lines().count(), bad.err());
        assertTrue(bad.err().contains("--peft-version must be a PEFT version such as 0.19.0 or 0.21.0, got 'latest'"),
                bad.err());
        CliRun noAdapter = CliRun.sparkmoe("logits", "--model", model.toString(), "--peft-version", "0.21.0",
                "--input-ids", reference("qwen3-moe-tiny-reference.safetensors").toString(), "--out",
                tmp.resolve("l.safetensors").toString());
        assertEquals(1, noAdapter.exitCode(), noAdapter.err());
        assertTrue(noAdapter.err().contains("--peft-version 0.21.0 needs --adapter"), noAdapter.err());

        List<String> settled = evalArgs(model, unversioned, tmp.resolve("settled.json"));
        settled.addAll(List.of("--peft-version", "0.21.0"));
        CliRun accepted = CliRun.sparkmoe(settled);
        assertEquals(0, accepted.exitCode(), accepted.err());

        // the per-expert equivalent: the same LoRA under SparkMoE's per-expert keys
        ModelConfig config = ModelFolder.readConfig(hadoop(model), CONF);
        PeftAdapter versioned = PeftAdapter.read(hadoop(reference("fused-peft-qwen3")), CONF, config);
        Path perExpert = tmp.resolve("per-expert");
        versioned.write(hadoop(perExpert), CONF);
        CliRun plain = CliRun.sparkmoe(evalArgs(model, perExpert, tmp.resolve("per-expert.json")));
        assertEquals(0, plain.exitCode(), plain.err());
        assertEquals(numbers(tmp.resolve("per-expert.json")), numbers(tmp.resolve("settled.json")),
                "a fused adapter read with --peft-version evaluates bit-identically to its per-expert equivalent");
        assertTrue(new com.fasterxml.jackson.databind.ObjectMapper().readTree(tmp.resolve("settled.json").toFile())
                .get("peft_version").asText().equals("0.21.0"));
    }

    @Test
    void trainWritesAFusedAdapterThatEvalAccepts(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("train");
        String data = Fixtures.sysadminExcerpt(tmp).toString();
        CliRun train = CliRun.sparkmoe("train", "--model", Fixtures.tinyModel().toString(), "--data", data,
                "--window", "32", "--steps", "2", "--batch-windows", "2", "--rank", "2", "--alpha", "4",
                "--adapter-format", "fused", "--master", "local[2]", "--out", out.toString());
        assertEquals(0, train.exitCode(), train.err());
        JsonNode config = JSON.readTree(out.resolve("adapter").resolve(PeftAdapter.CONFIG_FILE).toFile());
        assertEquals(4, config.get("r").asInt());
        assertEquals(8, config.get("lora_alpha").asInt());
        assertTrue(config.get("target_parameters").size() == 2, config.toString());
        CliRun eval = CliRun.sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--adapter",
                out.resolve("adapter").toString(), "--data", data, "--window", "32", "--master", "local[2]");
        assertEquals(0, eval.exitCode(), eval.err());

        CliRun bad = CliRun.sparkmoe("train", "--model", Fixtures.tinyModel().toString(), "--data", data,
                "--adapter-format", "packed", "--out", tmp.resolve("bad").toString());
        assertEquals(1, bad.err().lines().count(), bad.err());
        assertTrue(bad.err().contains("--adapter-format must be per-expert or fused, got 'packed'"), bad.err());
    }
}
