package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.sparkmoe.driver.MemoryPlan;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.FixtureCommands.ok;

/**
 * The layer-sequential pass from the command line. {@code calibrate --layerwise} with {@code --imatrix} and
 * {@code --export-router-data}: the importance matrix (GGUF and dat), every router training file and the statistics
 * files are byte for byte the whole-model run's, for expert groups G = 1, 2 and 1, 2, 3 partitions, on the tiny
 * Mixtral and on the tiny DeepSeek-V3 (a dense first layer, MLA's latent sites, a shared expert, a sigmoid router).
 * And the memory plan's choice: an eval on an executor too small for the whole model runs the pass, with the expert
 * groups that fit, and writes the whole-model report. The files stay under target/layerwise-commands-test.
 */
class LayerwiseCommandsTest {
    private static final Path OUT = Path.of("target", "layerwise-commands-test").toAbsolutePath();
    /** What calibrate writes that does not depend on how it ran (report.html is the JSON drawn). */
    private static final List<String> STATISTICS = List.of("router-stats.json", "expert-scores.json",
            "expert-activations.safetensors");
    private static Path data;

    @BeforeAll
    static void excerpt() throws Exception {
        Files.createDirectories(OUT);
        data = Fixtures.sysadminExcerpt(OUT);
    }

    /** Calibrates {@code model} into OUT/name (its imatrix as OUT/name/imatrix.FORMAT); returns that folder. */
    private static Path calibrate(Path model, String name, String format, String... extra) throws Exception {
        Path out = Files.createDirectories(OUT.resolve(name));
        List<String> args = new ArrayList<>(List.of("calibrate", "--model", model.toString(), "--data",
                data.toString(), "--window", "64", "--master", "local[2]", "--out", out.resolve("calib").toString(),
                "--imatrix", out.resolve("imatrix." + format).toString(), "--imatrix-format", format,
                "--export-router-data"));
        args.addAll(List.of(extra));
        ok(args.toArray(String[]::new));
        return out;
    }

    /** Every file under the two runs' folders has the same bytes, and both hold the same files. */
    private static void assertSameFiles(Path whole, Path layerwise, String format) throws Exception {
        List<String> expected = files(whole);
        assertEquals(expected, files(layerwise), layerwise.toString());
        assertTrue(expected.contains("imatrix." + format), expected.toString());
        assertTrue(expected.stream().filter(f -> f.startsWith("calib/router-data/layer-")).count() > 4,
                "router training files: " + expected);
        for (String f : expected) {
            if (!f.equals("calib/report.html")) {
                assertEquals(-1, Files.mismatch(whole.resolve(f), layerwise.resolve(f)), layerwise + ": " + f);
            }
        }
        for (String f : STATISTICS) {
            assertTrue(expected.contains("calib/" + f), f);
        }
    }

    /** Relative paths of every file under {@code root}, sorted. */
    private static List<String> files(Path root) throws Exception {
        try (Stream<Path> walk = Files.walk(root)) {
            return walk.filter(Files::isRegularFile).map(p -> root.relativize(p).toString())
                    .filter(p -> !p.endsWith(".crc")).sorted().toList();
        }
    }

    @Test
    void tinyMixtralLayerwiseWritesTheWholeModelsImatrixAndRouterData() throws Exception {
        Path model = Fixtures.tinyModel();
        Path gguf = calibrate(model, "mixtral-whole-gguf", "gguf", "--partitions", "2");
        assertSameFiles(gguf, calibrate(model, "mixtral-g1-p1-gguf", "gguf", "--layerwise", "--partitions", "1"),
                "gguf");
        assertSameFiles(gguf, calibrate(model, "mixtral-g2-p3-gguf", "gguf", "--layerwise", "--expert-groups", "2",
                "--partitions", "3"), "gguf");
        Path dat = calibrate(model, "mixtral-whole-dat", "dat", "--partitions", "1");
        assertSameFiles(dat, calibrate(model, "mixtral-g2-p2-dat", "dat", "--layerwise", "--expert-groups", "2",
                "--partitions", "2"), "dat");
    }

    @Test
    void deepseekV3LayerwiseWritesTheWholeModelsImatrixAndRouterData() throws Exception {
        Path model = FixtureCommands.model("deepseek-v3-tiny");
        Path whole = calibrate(model, "deepseek-whole-gguf", "gguf", "--partitions", "1");
        assertSameFiles(whole, calibrate(model, "deepseek-g2-p3-gguf", "gguf", "--layerwise", "--expert-groups", "2",
                "--partitions", "3"), "gguf");
        assertSameFiles(whole, calibrate(model, "deepseek-g1-p2-gguf", "gguf", "--layerwise", "--partitions", "2"),
                "gguf");
    }

    /**
     * An executor declared ({@value SparkLimits#MEMORY_KEY}) with less than the whole tiny Mixtral needs beside its
     * anonymous memory (13.8 MiB mapped) and less than one whole layer (3.19 MiB), but enough for 2 of a layer's 4
     * expert groups at once (2 task slots: 1.5 MiB of experts beside 0.19 MiB of attention, over the ends' 1.00 MiB):
     * the plan chooses --layerwise --expert-groups 4 and says so in one line (also with --dry-run), and the report is
     * the whole-model run's, which --layerwise=false forces on the same executor.
     */
    @Test
    void anEvalOnAnExecutorTooSmallForTheModelRunsLayerwiseWithTheSameReport() throws Exception {
        Path model = Fixtures.tinyModel();
        String uri = model.toUri().toString();
        Configuration conf = new Configuration();
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(uri), conf);
        MemoryPlan whole = MemoryPlan.of(MemoryPlan.Job.EVAL, config, MemoryPlan.mappedBytes(uri, conf), 8, 64, 0,
                SparkLimits.of(SparkContexts.conf("sparkmoe eval", "local[2]"), null));
        long memory = whole.layerwise(config, MemoryPlan.tensorBytes(uri, conf), 8, 64, 4).totalBytes();
        assertTrue(memory < whole.layerwise(config, MemoryPlan.tensorBytes(uri, conf), 8, 64, 1).totalBytes());
        List<String> eval = List.of("eval", "--model", model.toString(), "--data", data.toString(), "--window", "64",
                "--master", "local[2]", "--partitions", "3");
        String before = System.setProperty(SparkLimits.MEMORY_KEY, String.valueOf(memory));
        try {
            String dryRun = printed(eval, "--dry-run");
            String line = "memory plan: the whole model needs ";
            assertTrue(dryRun.contains(line) && dryRun.contains("running --layerwise --expert-groups 4 "
                    + "(--no-layerwise runs the whole model)"), dryRun);
            assertEquals(1, dryRun.lines().filter(l -> l.startsWith(line)).count(), dryRun);
            String chosen = printed(eval, "--out", OUT.resolve("chosen.json").toString());
            assertTrue(chosen.contains("running --layerwise --expert-groups 4"), chosen);
            String forced = printed(eval, "--layerwise=false", "--out", OUT.resolve("whole.json").toString());
            assertFalse(forced.contains(line), forced);
            String wholeReport = Files.readString(OUT.resolve("whole.json"));
            String chosenReport = Files.readString(OUT.resolve("chosen.json"));
            assertTrue(wholeReport.endsWith("\n}\n"), wholeReport);
            String scores = wholeReport.substring(0, wholeReport.length() - 3);   // without the closing brace
            assertTrue(chosenReport.startsWith(scores + ",\n  \"layerwise\""), "the same scores, then the pass's "
                    + "storage:\n" + chosenReport);
            assertTrue(Files.readString(OUT.resolve("chosen.json")).contains("\"sysadmin-excerpt.txt\""));
            assertFalse(printed(eval, "--no-layerwise", "--dry-run").contains(line));
        } finally {
            if (before == null) {
                System.clearProperty(SparkLimits.MEMORY_KEY);
            } else {
                System.setProperty(SparkLimits.MEMORY_KEY, before);
            }
        }
    }

    /** What a successful command line printed to stderr (the memory plan goes to System.err). */
    private static String printed(List<String> args, String... extra) {
        List<String> all = new ArrayList<>(args);
        all.addAll(List.of(extra));
        PrintStream saved = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setErr(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            CliRun run = CliRun.sparkmoe(all);
            assertEquals(0, run.exitCode(), all + "\n" + run.err());
            return captured.toString(StandardCharsets.UTF_8) + run.err();
        } finally {
            System.setErr(saved);
        }
    }
}
