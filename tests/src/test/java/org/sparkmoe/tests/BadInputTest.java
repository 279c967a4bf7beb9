package org.sparkmoe.tests;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.SparkContexts;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
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

    /**
     * Bad input found on the driver: besides {@link #assertFails}, no SparkContext was started (so no Spark task
     * ran, and nothing of Spark's reached the console).
     */
    private static void assertFailsBeforeSpark(Supplier<CliRun> command, String... fragments) {
        int before = SparkContexts.started();
        CliRun run = command.get();
        assertFails(run, fragments);
        assertEquals(before, SparkContexts.started(), "a SparkContext was started before the error: " + run.err());
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

    /** Invalid UTF-8 is found on the driver (a streaming decode), naming the byte; an existing report is kept. */
    @Test
    void invalidUtf8LeavesAnExistingReportUntouched() throws IOException {
        Path report = Files.writeString(dir.resolve("report.json"), "{\"earlier\": true}\n");
        Path latin1 = Files.write(dir.resolve("latin1.txt"), "caf\u00e9 au lait".getBytes(StandardCharsets.ISO_8859_1));
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data",
                latin1.toString(), "--out", report.toString(), "--master", "local[1]"),
                "not valid UTF-8", "latin1.txt", "offset 3");
        assertEquals("{\"earlier\": true}\n", Files.readString(report));
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of("latin1.txt", "report.json"),
                    left.map(p -> p.getFileName().toString()).sorted().toList());
        }
    }
    // ---- class 1: found on the driver before Spark starts (it used to take a Spark task and its trace) ----

    private Supplier<CliRun> evalOf(Path model, String data, String... more) {
        List<String> args = new ArrayList<>(List.of("eval", "--model", model.toString(), "--data", data,
                "--master", "local[1]"));
        args.addAll(List.of(more));
        return () -> sparkmoe(args);
    }

    private Supplier<CliRun> evalOf(Path model) {
        return evalOf(model, Fixtures.corpus("sysadmin.txt").toString());
    }

    private Path modelWithTokenizer(String json) throws IOException {
        Path model = modelCopy();
        Files.writeString(model.resolve("tokenizer.json"), json);
        return model;
    }

    private static final String WORD_PIECE = "{\"version\":\"1.0\",\"added_tokens\":[],\"normalizer\":null,"
            + "\"pre_tokenizer\":{\"type\":\"Whitespace\"},\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\","
            + "\"continuing_subword_prefix\":\"##\",\"max_input_chars_per_word\":100,"
            + "\"vocab\":{\"[UNK]\":0,\"the\":1,\"a\":2}}}";

    @Test
    void wordPieceTokenizerIsRefusedBeforeSpark() throws IOException {
        Path model = modelWithTokenizer(WORD_PIECE);
        assertFailsBeforeSpark(evalOf(model), "tokenizer.json", "expected a BPE tokenizer", "\"WordPiece\"");
        Path out = dir.resolve("train-out");
        assertFailsBeforeSpark(() -> sparkmoe("train", "--model", model.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--out", out.toString(), "--master", "local[1]"),
                "tokenizer.json", "WordPiece");
        assertFalse(Files.exists(out));
        assertFailsBeforeSpark(() -> sparkmoe("calibrate", "--model", model.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--out", out.toString(), "--master", "local[1]"),
                "tokenizer.json", "WordPiece");
        assertFalse(Files.exists(out));
    }

    @Test
    void truncatedMissingOrEmptyTokenizerIsRefusedBeforeSpark() throws IOException {
        String full = Files.readString(Fixtures.tinyModel().resolve("tokenizer.json"));
        Path model = modelWithTokenizer(full.substring(0, full.length() / 2));
        assertFailsBeforeSpark(evalOf(model), "cannot parse tokenizer file", "tokenizer.json");
        Files.writeString(model.resolve("tokenizer.json"),
                "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"added_tokens\":[]}");
        assertFailsBeforeSpark(evalOf(model), "tokenizer.json", "no model.vocab");
        Files.delete(model.resolve("tokenizer.json"));
        assertFailsBeforeSpark(evalOf(model), "no usable tokenizer.json", "not found");
    }

    /** An id past config.json's vocab_size used to fail in a task as "token id ... outside the vocabulary". */
    @Test
    void tokenizerIdsPastTheVocabSizeAreRefusedBeforeSpark() throws IOException {
        String json = Files.readString(Fixtures.tinyModel().resolve("tokenizer.json"));
        Path model = modelWithTokenizer(json.replaceFirst("\"vocab\"\\s*:\\s*\\{", "\"vocab\": {\"zzz-extra\": 5000, "));
        assertFailsBeforeSpark(evalOf(model), "tokenizer.json", "ids up to 5000", "vocab_size 1024");
    }

    /** Integer or boolean tensors where weights belong: named with their dtype (I32 has F32's width). */
    @Test
    void weightOfAnIntegerDtypeIsRefusedBeforeSpark() throws IOException {
        String tensor = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
        Path model = modelCopy();
        Path weights = model.resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(weights);
        int headerLength = (int) ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        String header = new String(bytes, 8, headerLength, StandardCharsets.UTF_8);
        Matcher m = Pattern.compile("\"" + Pattern.quote(tensor) + "\"\\s*:\\s*\\{\\s*\"dtype\"\\s*:\\s*\"F32\"")
                .matcher(header);
        assertTrue(m.find(), header);
        String patched = header.substring(0, m.start()) + m.group().replace("F32", "I32") + header.substring(m.end());
        System.arraycopy(patched.getBytes(StandardCharsets.UTF_8), 0, bytes, 8, headerLength);
        Files.write(weights, bytes);
        assertFailsBeforeSpark(evalOf(model), tensor, "dtype I32", "floating-point");
    }

    @Test
    void dataThatIsNotUtf8TextIsRefusedBeforeSpark() throws IOException {
        Path model = Fixtures.tinyModel();
        Path folder = Files.createDirectories(dir.resolve("a-folder"));
        assertFailsBeforeSpark(evalOf(model, folder.toString()), "data file is a directory", "a-folder");
        assertFailsBeforeSpark(evalOf(model, model.resolve("model.safetensors").toString()),
                "data file is binary", "model.safetensors", "NUL byte at offset");
        Path utf16 = Files.write(dir.resolve("utf16.txt"), "\uFEFFhello world".getBytes(StandardCharsets.UTF_16LE));
        assertFailsBeforeSpark(evalOf(model, utf16.toString()), "data file is UTF-16", "FF FE", "utf16.txt");
        Path utf16be = Files.write(dir.resolve("utf16be.txt"), "\uFEFFhello".getBytes(StandardCharsets.UTF_16BE));
        assertFailsBeforeSpark(evalOf(model, utf16be.toString()), "data file is UTF-16", "FE FF", "utf16be.txt");
        // a valid prefix longer than the decoder's 64 KiB buffer, then a lone continuation byte
        byte[] late = ("x".repeat(70_000) + "\u0080").getBytes(StandardCharsets.ISO_8859_1);
        Path lateBad = Files.write(dir.resolve("late.txt"), late);
        assertFailsBeforeSpark(evalOf(model, lateBad.toString()), "not valid UTF-8", "late.txt", "offset 70000");
        Path cut = Files.write(dir.resolve("cut.txt"), Arrays.copyOf("caf\u00e9".getBytes(StandardCharsets.UTF_8), 4));
        assertFailsBeforeSpark(evalOf(model, cut.toString()), "not valid UTF-8", "cut.txt", "offset 3");
    }

    /** demo --data takes a folder: each of its .txt files is checked the same way. */
    @Test
    void demoDataFolderWithUtf16FileIsRefusedBeforeSpark() throws IOException {
        Path data = Files.createDirectories(dir.resolve("corpus"));
        Files.copy(Fixtures.corpus("sysadmin.txt"), data.resolve("sysadmin.txt"));
        Files.write(data.resolve("notes.txt"), "\uFEFFnotes".getBytes(StandardCharsets.UTF_16LE));
        Path out = dir.resolve("demo-out");
        assertFailsBeforeSpark(() -> sparkmoe("demo", "--model", Fixtures.tinyModel().toString(), "--data",
                data.toString(), "--out", out.toString(), "--master", "local[1]"), "data file is UTF-16", "notes.txt");
        assertFalse(Files.exists(out));
    }

    // ---- class 2: non-finite numbers are refused, never reported ----

    /** The tiny model with one NaN in an expert's weight (layer 0, expert 0, w1[0, 0]). */
    private Path modelWithNaN() throws IOException {
        Path model = modelCopy();
        Path weights = model.resolve("model.safetensors");
        byte[] bytes = Files.readAllBytes(weights);
        int headerLength = (int) ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        String header = new String(bytes, 8, headerLength, StandardCharsets.UTF_8);
        Matcher m = Pattern.compile("\"model\\.layers\\.0\\.block_sparse_moe\\.experts\\.0\\.w1\\.weight\""
                + "\\s*:\\s*\\{[^}]*\"data_offsets\"\\s*:\\s*\\[(\\d+)").matcher(header);
        assertTrue(m.find(), header);
        int at = 8 + headerLength + Integer.parseInt(m.group(1));
        ByteBuffer.wrap(bytes, at, 4).order(ByteOrder.LITTLE_ENDIAN).putFloat(Float.NaN);
        Files.write(weights, bytes);
        return model;
    }

    @Test
    void nanWeightFailsEvalNamingTheModelAndWritesNoReport() throws IOException {
        Path model = modelWithNaN();
        Path report = dir.resolve("report.json");
        CliRun run = sparkmoe("eval", "--model", model.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--window", "64", "--out", report.toString(), "--master", "local[1]");
        assertEquals(1, run.exitCode(), run.err());
        assertFails(run, "model file:" + model, "non-finite NLL (NaN)",
                "sysadmin.txt", "no report written");
        assertFalse(Files.exists(report));
    }

    @Test
    void nanWeightFailsCalibrateNamingTheModelAndWritesNothing() throws IOException {
        Path model = modelWithNaN();
        Path out = dir.resolve("calib");
        CliRun run = sparkmoe("calibrate", "--model", model.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "64", "--max-tokens-per-file", "256",
                "--out", out.toString(), "--master", "local[1]");
        assertEquals(1, run.exitCode(), run.err());
        assertFails(run, "model ", "a non-finite output in decoder layer 0", "sysadmin.txt"); // expert 0's w1
        assertFalse(Files.exists(out.resolve("router-stats.json")));
    }

    @Test
    void nanWeightStopsTrainAtTheFirstRoundWithoutAnAdapter() throws IOException {
        Path model = modelWithNaN();
        Path out = dir.resolve("lora");
        CliRun run = sparkmoe("train", "--model", model.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--split", "valid", "--window", "64", "--steps", "4", "--averaging-frequency", "2",
                "--checkpoint-every", "1", "--out", out.toString(), "--master", "local[1]");
        assertEquals(1, run.exitCode(), run.err());
        assertFails(run, "train stopped at round 1/2 (steps 1..2)", "is not finite", "wrote no adapter");
        assertFalse(Files.exists(out.resolve("adapter")));
        assertFalse(Files.exists(out.resolve("checkpoints")));
    }

    // ---- class 7: every message names its cause ----

    @Test
    void unknownHdfsHostIsNamedWithThePath() {
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", "hdfs://unknown-host.invalid/m", "--data",
                        Fixtures.corpus("sysadmin.txt").toString()),
                "hdfs://unknown-host.invalid/m", "unknown host");
    }

    @Test
    void hdfsWithNothingListeningSaysConnectionRefused() throws IOException {
        int port;
        try (java.net.ServerSocket free = new java.net.ServerSocket(0)) {
            port = free.getLocalPort();
        }
        String model = "hdfs://localhost:" + port + "/m";
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", model, "--data",
                Fixtures.corpus("sysadmin.txt").toString()), model + "/config.json", "Connection refused");
    }

    @Test
    void emptyDataNamesAreRefusedNamingTheFlag() {
        String data = Fixtures.corpus("sysadmin.txt").toString();
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", ""),
                "--data must name text files, got an empty name");
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data",
                data + ",," + data), "--data must name text files, got an empty name (entry 2 of 3");
        assertFailsBeforeSpark(() -> sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data",
                "," + data, "--out", dir.resolve("c").toString()), "--data", "entry 1 of 2");
    }

    @Test
    void fifoIsNotARegularFile() throws Exception {
        Path fifo = dir.resolve("pipe.txt");
        Process mkfifo = new ProcessBuilder("mkfifo", fifo.toString()).start();
        assertEquals(0, mkfifo.waitFor());
        assertFailsBeforeSpark(evalOf(Fixtures.tinyModel(), fifo.toString()), "not a regular file", "pipe.txt");
    }

    /** --out whose parent is a file: refused before the job, for each command that writes at its end. */
    @Test
    void outUnderAFileIsRefusedBeforeSpark() throws IOException {
        Path file = Files.writeString(dir.resolve("plain-file"), "x");
        String model = Fixtures.tinyModel().toString();
        String data = Fixtures.corpus("sysadmin.txt").toString();
        Path out = file.resolve("sub/out");
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", model, "--data", data, "--out", out.toString()),
                "--out ", "cannot be created", "plain-file is a file, expected a folder");
        assertFailsBeforeSpark(() -> sparkmoe("calibrate", "--model", model, "--data", data, "--out", out.toString()),
                "--out ", "plain-file is a file");
        assertFailsBeforeSpark(() -> sparkmoe("train", "--model", model, "--data", data, "--out", out.toString()),
                "--out ", "plain-file is a file");
        assertFailsBeforeSpark(() -> sparkmoe("demo", "--model", model, "--out", out.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").getParent().toString()), "--out ", "plain-file is a file");
        assertFailsBeforeSpark(() -> sparkmoe("surgery", "merge-dense", "--model", model, "--method", "uniform",
                "--out", out.toString()),
                "--out ", "plain-file is a file");
        assertEquals("x", Files.readString(file));
    }

    // ---- class 6: errors that used to escape the contract (a stack trace, or minutes) ----

    @Test
    void masterThatIsNotASparkUrlIsAUsageError() {
        int before = SparkContexts.started();
        CliRun run = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--master", "bogus://x:1");
        assertEquals(2, run.exitCode(), run.err());
        assertFails(run, "--master", "bogus://x:1", "not a Spark master URL", "local[N]", "spark://HOST:PORT", "yarn");
        assertEquals(before, SparkContexts.started());
    }

    /** An unreachable spark:// master used to take 67 s of Spark's retries and end in a stack trace. */
    @Test
    void unreachableSparkMasterFailsFast() throws IOException {
        int port;
        try (java.net.ServerSocket free = new java.net.ServerSocket(0)) {
            port = free.getLocalPort();
        }
        String master = "spark://127.0.0.1:" + port;
        long start = System.nanoTime();
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--master", master),
                "cannot reach the Spark master at 127.0.0.1:" + port, "Connection refused");
        assertTrue(System.nanoTime() - start < 10_000_000_000L, "took " + (System.nanoTime() - start) / 1e9 + " s");
    }

    /** s3a:// without hadoop-aws used to end in "... 31 more". */
    @Test
    void pathOfAFileSystemNotOnTheClasspathNamesTheJar() {
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", "s3a://bucket/models/m", "--data",
                Fixtures.corpus("sysadmin.txt").toString()),
                "no Hadoop filesystem for scheme s3a; add hadoop-aws to the classpath");
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data",
                "s3a://bucket/corpus.txt"), "no Hadoop filesystem for scheme s3a");
        assertFailsBeforeSpark(() -> sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--out", "s3a://bucket/calib"),
                "no Hadoop filesystem for scheme s3a");
    }

    // ---- class 8: contract breaks ----

    /** train --base-model-name "" would write an adapter naming no base model: refused before Spark. */
    @Test
    void blankBaseModelNameIsRefusedBeforeSpark() {
        Path out = dir.resolve("named");
        assertFailsBeforeSpark(() -> sparkmoe("train", "--model", Fixtures.tinyModel().toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--base-model-name", " ", "--out", out.toString()),
                "--base-model-name must name the base model, got ' '");
        assertFalse(Files.exists(out));
    }

    @Test
    void badSplitIsAUsageError() {
        for (String command : List.of("eval", "calibrate", "train")) {
            CliRun run = sparkmoe(command, "--model", Fixtures.tinyModel().toString(), "--data",
                    Fixtures.corpus("sysadmin.txt").toString(), "--split", "bogus", "--out", dir.resolve("o").toString());
            assertEquals(2, run.exitCode(), run.err());
            assertFails(run, "--split", "unknown split 'bogus'", "train, valid, test, all");
        }
        assertFalse(Files.exists(dir.resolve("o")));
    }

    /** eval --out on an existing (empty) folder used to replace the folder with the report. */
    @Test
    void fileOutputThatIsAFolderIsRefusedBeforeSpark() throws IOException {
        Path folder = Files.createDirectories(dir.resolve("reports"));
        String model = Fixtures.tinyModel().toString();
        String data = Fixtures.corpus("sysadmin.txt").toString();
        assertFailsBeforeSpark(() -> sparkmoe("eval", "--model", model, "--data", data, "--out", folder.toString()),
                "--out ", "reports is a folder; eval writes one JSON file");
        assertFailsBeforeSpark(() -> sparkmoe("logits", "--model", model, "--input-ids", model + "/model.safetensors",
                "--out", folder.toString()), "--out ", "reports is a folder; logits writes one safetensors file");
        assertTrue(Files.isDirectory(folder));
        Path file = Files.writeString(dir.resolve("calib"), "x");
        assertFailsBeforeSpark(() -> sparkmoe("calibrate", "--model", model, "--data", data, "--out", file.toString()),
                "--out ", "calib is a file; calibrate writes a folder");
        assertEquals("x", Files.readString(file));
        try (Stream<Path> left = Files.list(dir)) {
            assertEquals(List.of("calib", "reports"), left.map(p -> p.getFileName().toString()).sorted().toList());
        }
    }
}
