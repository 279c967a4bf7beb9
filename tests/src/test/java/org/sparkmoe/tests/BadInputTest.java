package org.sparkmoe.tests;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * Every kind of bad input, through the real command line: a non-zero exit, and one line on stderr that names
 * the culprit. Also: a failing run leaves an existing report untouched.
 */
class BadInputTest {
    @TempDir
    Path dir;

    private CliRun eval(Path model, String... more) {
        List<String> args = new ArrayList<>(List.of("eval", "--model", model.toString(),
                "--data", Fixtures.corpus("sysadmin.txt").toString(), "--master", "local[1]"));
        args.addAll(List.of(more));
        return sparkmoe(args.toArray(String[]::new));
    }

    private static void assertFails(CliRun run, String... fragments) {
        assertNotEquals(0, run.exitCode(), run.err());
        for (String fragment : fragments) {
            assertTrue(run.firstLine().contains(fragment), "expected '" + fragment + "' in: " + run.err());
        }
        assertTrue(run.err().lines().count() <= 1, "more than one line: " + run.err());
    }

    /** A copy of the tiny model folder that a test may damage. */
    private Path modelCopy() throws IOException {
        Path copy = dir.resolve("model");
        Files.createDirectories(copy);
        try (Stream<Path> files = Files.list(Fixtures.tinyModel())) {
            for (Path f : files.toList()) {
                Files.copy(f, copy.resolve(f.getFileName()));
            }
        }
        return copy;
    }

    @Test
    void missingModelFolder() {
        Path missing = dir.resolve("no-such-model");
        assertFails(eval(missing), "model folder not found", "no-such-model");
    }

    @Test
    void truncatedSafetensors() throws IOException {
        Path model = modelCopy();
        Path weights = model.resolve("model.safetensors");
        try (RandomAccessFile f = new RandomAccessFile(weights.toFile(), "rw")) {
            f.setLength(f.length() / 2);
        }
        assertFails(eval(model), "model.safetensors");
    }

    @Test
    void headerOffsetsPastTheEnd() throws IOException {
        Path model = modelCopy();
        Path weights = model.resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(weights);
        int headerLength = (int) ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        String header = new String(bytes, 8, headerLength, StandardCharsets.UTF_8);
        long largestEnd = 0;
        Matcher m = Pattern.compile("\\d+\\]").matcher(header);
        while (m.find()) {
            largestEnd = Math.max(largestEnd, Long.parseLong(header.substring(m.start(), m.end() - 1)));
        }
        String pastEnd = "9".repeat(String.valueOf(largestEnd).length());
        byte[] patched = header.replace(largestEnd + "]", pastEnd + "]").getBytes(StandardCharsets.UTF_8);
        assertEquals(headerLength, patched.length);
        System.arraycopy(patched, 0, bytes, 8, headerLength);
        Files.write(weights, bytes);
        assertFails(eval(model), "model.safetensors", pastEnd);
    }

    @Test
    void tensorShapeDisagreesWithConfig() throws IOException {
        Path model = modelCopy();
        Path config = model.resolve("config.json");
        Files.writeString(config, Files.readString(config).replace("\"intermediate_size\": 256", "\"intermediate_size\": 128"));
        assertFails(eval(model), "model.layers.0.block_sparse_moe.experts.0.w1.weight", "[256, 128]", "[128, 128]");
    }

    @Test
    void unknownModelType() throws IOException {
        Path model = modelCopy();
        Path config = model.resolve("config.json");
        Files.writeString(config, Files.readString(config).replace("\"model_type\": \"mixtral\"", "\"model_type\": \"gpt2\""));
        assertFails(eval(model), "model_type", "gpt2");
    }

    @Test
    void emptyDataFile() throws IOException {
        Path empty = Files.createFile(dir.resolve("empty.txt"));
        CliRun run = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", empty.toString(),
                "--master", "local[1]");
        assertFails(run, "data file is empty", "empty.txt");
    }

    @Test
    void missingDataFile() {
        CliRun run = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data",
                dir.resolve("absent.txt").toString());
        assertFails(run, "data file not found", "absent.txt");
    }

    @Test
    void windowBelowTwo() {
        assertFails(eval(Fixtures.tinyModel(), "--window", "1"), "--window must be ≥ 2, got 1");
    }

    @Test
    void topKAboveExperts() {
        assertFails(eval(Fixtures.tinyModel(), "--top-k", "9"), "--top-k must be in [1, 8]", "got 9");
    }

    /** spark-submit puts spark-defaults and --conf into system properties; a --device that disagrees is refused. */
    @Test
    void deviceThatConflictsWithTheSparkConfigurationIsRefusedBeforeSparkStarts() {
        System.setProperty("spark.sparkmoe.device", "cuda");
        try {
            CliRun run = sparkmoe("eval", "--device", "cpu", "--model", Fixtures.tinyModel().toString(), "--data",
                    Fixtures.corpus("fortunes.txt").toString());
            assertFails(run, "--device cpu conflicts with spark.sparkmoe.device=cuda from the Spark configuration");
        } finally {
            System.clearProperty("spark.sparkmoe.device");
        }
    }

    @Test
    void unknownFlagExitsWithTwo() {
        CliRun run = sparkmoe("eval", "--model", "m", "--data", "d", "--windw", "3");
        assertEquals(2, run.exitCode(), run.err());
        assertTrue(run.firstLine().contains("--windw"), run.err());
    }

    @Test
    void tokenIdsOutsideTheVocabularyInLogitsInput() throws IOException {
        Path ids = dir.resolve("ids.safetensors");
        String header = "{\"input_ids\":{\"dtype\":\"I64\",\"shape\":[1,4],\"data_offsets\":[0,32]}}";
        ByteBuffer file = ByteBuffer.allocate(8 + header.length() + 32).order(ByteOrder.LITTLE_ENDIAN);
        file.putLong(header.length()).put(header.getBytes(StandardCharsets.US_ASCII));
        file.putLong(1).putLong(2).putLong(5000).putLong(3);
        Files.write(ids, file.array());
        CliRun run = sparkmoe("logits", "--model", Fixtures.tinyModel().toString(), "--input-ids", ids.toString(),
                "--out", dir.resolve("out.safetensors").toString());
        assertFails(run, "input_ids[0,2] = 5000", "[0, 1024)");
        assertTrue(Files.notExists(dir.resolve("out.safetensors")));
    }

    /** Invalid UTF-8 is only found when a Spark task reads the file: the task's error reaches the user. */
    @Test
    void failureInsideASparkTaskLeavesAnExistingReportUntouched() throws IOException {
        Path report = Files.writeString(dir.resolve("report.json"), "{\"earlier\": true}\n");
        Path latin1 = Files.write(dir.resolve("latin1.txt"), "caf\u00e9 au lait".getBytes(StandardCharsets.ISO_8859_1));
        CliRun run = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", latin1.toString(),
                "--out", report.toString(), "--master", "local[1]");
        assertFails(run, "not valid UTF-8", "latin1.txt");
        assertEquals("{\"earlier\": true}\n", Files.readString(report));
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of("latin1.txt", "report.json"),
                    left.map(p -> p.getFileName().toString()).sorted().toList());
        }
    }
}
