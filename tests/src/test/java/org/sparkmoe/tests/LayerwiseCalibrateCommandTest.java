package org.sparkmoe.tests;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.FixtureCommands.ok;

/**
 * {@code calibrate --layerwise} with {@code --imatrix} and {@code --export-router-data}: the importance matrix (GGUF
 * and dat), every router training file and the statistics files are byte for byte the whole-model run's, for expert
 * groups G = 1, 2 and 1, 2, 3 partitions, on the tiny Mixtral and on the tiny DeepSeek-V3 (a dense first layer, MLA's
 * latent sites, a shared expert, a sigmoid router). The files stay under target/layerwise-calibrate-command-test.
 */
class LayerwiseCalibrateCommandTest {
    private static final Path OUT = Path.of("target", "layerwise-calibrate-command-test").toAbsolutePath();
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
}
