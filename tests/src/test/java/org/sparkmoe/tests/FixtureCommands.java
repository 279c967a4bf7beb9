package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/** What the command tests on the reference fixtures share: a fixture folder, a successful command line, its perplexity. */
final class FixtureCommands {
    private static final ObjectMapper JSON = new ObjectMapper();

    private FixtureCommands() {
    }

    /** The fixture folder {@code tests/src/test/resources/reference/NAME}. */
    static Path model(String name) {
        return ReferenceParity.folder(name);
    }

    static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    /** Runs {@code sparkmoe args} and asserts exit code 0. */
    static void ok(String... args) {
        CliRun run = sparkmoe(args);
        assertEquals(0, run.exitCode(), String.join(" ", args) + "\n" + run.err());
    }

    /**
     * Runs {@code calibrate} on fixture folder {@code model} over the sysadmin excerpt (window 64) into
     * {@code tmp/calib}; its router-stats.json, which must count the model's experts.
     */
    static JsonNode calibrate(Path model, ModelConfig config, Path tmp) throws Exception {
        Path calib = tmp.resolve("calib");
        ok("calibrate", "--model", model.toString(), "--data", Fixtures.sysadminExcerpt(tmp).toString(), "--window",
                "64", "--master", "local[2]", "--out", calib.toString());
        JsonNode stats = JSON.readTree(calib.resolve("router-stats.json").toFile());
        assertEquals(config.num_experts, stats.get("experts").asInt());
        return stats;
    }

    /** Test-split perplexity of sysadmin.txt (window 64) through {@code sparkmoe eval}. */
    static double ppl(Path model, Path tmp) throws Exception {
        Path out = tmp.resolve(model.getFileName() + "-eval.json");
        ok("eval", "--model", model.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(), "--window", "64",
                "--master", "local[2]", "--out", out.toString());
        double ppl = JSON.readTree(out.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1, model + ": ppl " + ppl);
        return ppl;
    }

    /**
     * The demo on fixture {@code name} (window 64, 4 train steps) over the first 60 000 characters of two corpus
     * files; the {@code surgery.rescale} its summary reports (measured, or none without renormalised top-k weights).
     */
    static String demoRescale(String name, Path tmp) throws Exception {
        Path out = tmp.resolve("demo");
        Path corpus = Files.createDirectories(tmp.resolve("corpus"));
        for (String file : List.of("sysadmin.txt", "fortunes.txt")) {
            Files.writeString(corpus.resolve(file), Files.readString(Fixtures.corpus(file)).substring(0, 60_000));
        }
        ok("demo", "--model", model(name).toString(), "--data", corpus.toString(), "--out", out.toString(),
                "--window", "64", "--train-steps", "4", "--max-tokens-per-file", "2048", "--master", "local[2]");
        return JSON.readTree(out.resolve("summary.json").toFile()).get("surgery").get("rescale").asText();
    }

    /** Tensor {@code name} of the checkpoint in {@code model}, read as float32 (FP8 weights dequantized). */
    static INDArray tensor(Path model, String name) {
        Configuration conf = new Configuration();
        try (Checkpoint c = Checkpoint.open(hadoop(model), conf)) {
            return FusedExperts.perExpert(c, ModelFolder.readConfig(hadoop(model), conf)).readFloat(name);
        }
    }

    /** Tensor {@code name} holds the same floats in both checkpoints. */
    static void assertTensorEquals(Path a, Path b, String name) {
        assertArrayEquals(tensor(a, name).data().asFloat(), tensor(b, name).data().asFloat(), name);
    }
}
