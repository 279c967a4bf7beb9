package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.SafeTensorsFile;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * calibrate --export-router-data, then retrain-router through the real command line on a real local[2] Spark:
 * the retrained routers reproduce the model's top-2 routing on the data, an expert map gives grouped routers,
 * and bad input fails with one line naming the culprit.
 */
class RetrainRouterTest {
    @TempDir
    static Path dir;
    private static Path routerData;

    /** 2 files × 8 windows of 64 tokens of the valid split: 1,024 tokens, 16 DataSet files per layer. */
    @BeforeAll
    static void export() {
        CliRun run = sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data",
                Fixtures.corpus("sysadmin.txt") + "," + Fixtures.corpus("scripture.txt"), "--window", "64",
                "--max-tokens-per-file", "512", "--export-router-data", "--master", "local[2]",
                "--out", dir.resolve("calib").toString());
        assertEquals(0, run.exitCode(), run.err());
        routerData = dir.resolve("calib/router-data");
        assertTrue(Files.isRegularFile(routerData.resolve("router-data.json")));
    }

    private static CliRun retrain(Path out, String... more) {
        List<String> args = new ArrayList<>(List.of("retrain-router", "--model", Fixtures.tinyModel().toString(),
                "--router-data", routerData.toString(), "--out", out.toString(), "--master", "local[2]"));
        args.addAll(List.of(more));
        return sparkmoe(args.toArray(String[]::new));
    }

    @Test
    void retrainedRoutersReproduceTheModelsRouting() throws Exception {
        Path out = dir.resolve("retrained");
        CliRun run = retrain(out, "--epochs", "12", "--learning-rate", "0.01", "--averaging-frequency", "2");
        assertEquals(0, run.exitCode(), run.err());
        JsonNode report = new ObjectMapper().readTree(out.resolve("retrain-router.json").toFile());
        assertEquals(4, report.get("layers").size());
        for (JsonNode layer : report.get("layers")) {
            assertEquals(1024, layer.get("tokens").asLong());
            assertEquals(8, layer.get("experts").asInt());
            // a random router agrees on about 1/28 of tokens; the teacher's own gate is an exact optimum
            assertTrue(layer.get("agreement").asDouble() >= 0.85, "layer agreement: " + layer);
        }
        // the checkpoint is the model with the new gates: it loads, and its gates are router.safetensors'
        try (SafeTensorsFile gates = SafeTensorsFile.open(out.resolve("router.safetensors"));
             Checkpoint checkpoint = Checkpoint.open(new org.apache.hadoop.fs.Path(out.toUri()), new Configuration());
             Checkpoint original = Checkpoint.open(new org.apache.hadoop.fs.Path(Fixtures.tinyModel().toUri()),
                     new Configuration())) {
            String name = "model.layers.1.block_sparse_moe.gate.weight";
            INDArray gate = gates.readFloat(name);
            assertArrayEquals(new long[] {8, 128}, gate.shape());
            assertEquals(gate, checkpoint.readFloat(name));
            assertNotEquals(original.readFloat(name), gate);
            String expert = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
            assertEquals(original.readFloat(expert), checkpoint.readFloat(expert));
            assertEquals(original.names(), checkpoint.names());
        }
        assertTrue(Files.isRegularFile(out.resolve("config.json")) && Files.isRegularFile(out.resolve("tokenizer.json")));
    }

    @Test
    void expertMapGivesOneRouterOutputPerGroup() throws Exception {
        Path map = dir.resolve("map.json");
        String layer = "{\"groups\": [[0, 1], [2, 3], [4, 5], [6, 7]]}";
        Files.writeString(map, "{\"layers\": [" + String.join(",", layer, layer, layer, layer) + "]}");
        Path out = dir.resolve("grouped");
        CliRun run = retrain(out, "--expert-map", map.toString(), "--epochs", "1");
        assertEquals(0, run.exitCode(), run.err());
        try (SafeTensorsFile gates = SafeTensorsFile.open(out.resolve("router.safetensors"))) {
            for (int l = 0; l < 4; l++) {
                assertArrayEquals(new long[] {4, 128}, gates.info("model.layers." + l + ".block_sparse_moe.gate.weight").shape());
            }
        }
        assertFalse(Files.exists(out.resolve("model.safetensors")), "no checkpoint: the experts are not merged here");
        JsonNode report = new ObjectMapper().readTree(out.resolve("retrain-router.json").toFile());
        assertEquals(4, report.get("layers").get(0).get("experts").asInt());
        assertEquals(2, report.get("layers").get(0).get("top_k").asInt());
    }

    private static void assertFails(CliRun run, String... fragments) {
        assertNotEquals(0, run.exitCode(), run.err());
        for (String fragment : fragments) {
            assertTrue(run.firstLine().contains(fragment), "expected '" + fragment + "' in: " + run.err());
        }
        assertTrue(run.err().lines().count() <= 1, "more than one line: " + run.err());
    }

    private static Path mapFile(String name, String json) throws Exception {
        Path p = dir.resolve(name);
        Files.writeString(p, json);
        return p;
    }

    @Test
    void badExpertMaps() throws Exception {
        String good = "{\"groups\": [[0], [1], [2], [3], [4], [5], [6], [7]]}";
        Path twice = mapFile("twice.json", "{\"layers\": [" + good + "," + good + "," + good
                + ", {\"groups\": [[0, 1], [1, 2], [3, 4, 5, 6, 7]]}]}");
        assertFails(retrain(dir.resolve("x"), "--expert-map", twice.toString()), "twice.json", "layers[3]",
                "expert 1 is in groups 0 and 1");
        Path missing = mapFile("missing.json", "{\"layers\": [" + good + "," + good + "," + good
                + ", {\"groups\": [[0, 1], [2, 3, 4, 5, 6]]}]}");
        assertFails(retrain(dir.resolve("x"), "--expert-map", missing.toString()), "expert 7 is in no group");
        Path outOfRange = mapFile("range.json", "{\"layers\": [" + good + "," + good + "," + good
                + ", {\"groups\": [[0, 1, 2, 3, 4, 5, 6, 7, 8]]}]}");
        assertFails(retrain(dir.resolve("x"), "--expert-map", outOfRange.toString()), "expert 8 is not an index in [0, 8)");
        Path layers = mapFile("layers.json", "{\"layers\": [" + good + "]}");
        assertFails(retrain(dir.resolve("x"), "--expert-map", layers.toString()), "has 1 layers, the model has 4 MoE layers");
        Path notJson = mapFile("broken.json", "{\"layers\": [");
        assertFails(retrain(dir.resolve("x"), "--expert-map", notJson.toString()), "broken.json", "not valid JSON");
        assertFails(retrain(dir.resolve("x"), "--expert-map", dir.resolve("nope.json").toString()),
                "expert map not found", "nope.json");
    }

    /** OUT is written atomically (a hidden sibling renamed into place), so it must be new: refused before Spark starts. */
    @Test
    void outThatHoldsFilesIsRefused() throws Exception {
        Path used = dir.resolve("used-out");
        Files.createDirectories(used);
        Files.writeString(used.resolve("notes.txt"), "keep me");
        assertFails(retrain(used), "--out ", "used-out already exists and is not an empty folder");
        assertEquals("keep me", Files.readString(used.resolve("notes.txt")));
    }

    @Test
    void missingOrEmptyRouterData() throws Exception {
        CliRun missing = sparkmoe("retrain-router", "--model", Fixtures.tinyModel().toString(), "--router-data",
                dir.resolve("no-such-data").toString(), "--out", dir.resolve("x").toString());
        assertFails(missing, "router data not found", "no-such-data");

        Path empty = dir.resolve("empty-data");
        for (int l = 0; l < 4; l++) {
            Files.createDirectories(empty.resolve("layer-" + l));
        }
        Files.copy(routerData.resolve("router-data.json"), empty.resolve("router-data.json"));
        CliRun none = sparkmoe("retrain-router", "--model", Fixtures.tinyModel().toString(), "--router-data",
                empty.toString(), "--out", dir.resolve("x").toString(), "--master", "local[1]");
        assertFails(none, "layer-0 holds no router DataSet files");
        assertFails(retrain(dir.resolve("x"), "--epochs", "0"), "--epochs must be ≥ 1");
    }

    /** A truncated DataSet file used to give a bare "EOFException"; it is named now. */
    @Test
    void truncatedRouterDataFileIsNamed() throws Exception {
        Path copy = dir.resolve("truncated-data");
        try (var files = Files.walk(routerData)) {
            for (Path f : files.toList()) {
                Path target = copy.resolve(routerData.relativize(f).toString());
                if (Files.isDirectory(f)) {
                    Files.createDirectories(target);
                } else {
                    Files.copy(f, target);
                }
            }
        }
        Path victim;
        try (var files = Files.list(copy.resolve("layer-0"))) {
            victim = files.filter(f -> f.getFileName().toString().endsWith(".bin")
                    && !f.getFileName().toString().startsWith(".")).sorted().findFirst().orElseThrow();
        }
        Files.deleteIfExists(victim.resolveSibling("." + victim.getFileName() + ".crc")); // cut short, not corrupt
        try (var f = new java.io.RandomAccessFile(victim.toFile(), "rw")) {
            f.setLength(f.length() / 2);
        }
        Path out = dir.resolve("from-truncated");
        CliRun run = sparkmoe("retrain-router", "--model", Fixtures.tinyModel().toString(), "--router-data",
                copy.toString(), "--out", out.toString(), "--master", "local[1]", "--epochs", "1");
        assertFails(run, "router data file", victim.getFileName().toString(), "truncated", "EOFException");
        assertFalse(Files.exists(out));
    }

    @Test
    void badCalibrateInput() throws Exception {
        String model = Fixtures.tinyModel().toString();
        String out = dir.resolve("bad-out").toString();
        assertFails(sparkmoe("calibrate", "--model", model, "--data", dir.resolve("missing.txt").toString(),
                "--out", out), "data file not found", "missing.txt");
        assertFails(sparkmoe("calibrate", "--model", model, "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--window", "64", "--max-tokens-per-file", "10", "--out", out), "--max-tokens-per-file must be ≥ --window");
        Path tiny = dir.resolve("tiny.txt");
        Files.writeString(tiny, "a few words only. ".repeat(20));
        assertFails(sparkmoe("calibrate", "--model", model, "--data", tiny.toString(), "--master", "local[1]",
                "--out", out), "tiny.txt", "fewer tokens than one window of 256");
        assertFails(sparkmoe("calibrate", "--model", dir.resolve("no-model").toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--out", out), "model folder not found");
    }
}
