package org.sparkmoe.tests;

import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.calib.CalibrateJob;
import org.sparkmoe.driver.calib.CalibratePlan;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.text.TextSplit;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * eval --layerwise and calibrate --layerwise on a real local[2] SparkContext: one decoder layer at a time over a persisted hidden-state RDD gives
 * the whole-model report bit for bit (the JSON byte for byte) for any partitioning, on the tiny Mixtral and on the tiny
 * DeepSeek-V3 (a dense first layer, MLA, group-limited routing, a shared expert), with expert groups as tasks
 * (G = 1, 2, 4) and with the hidden-state RDD checkpointed; calibrate's statistics (router, expert activations,
 * saliency) are the whole-model run's, exactly.
 */
class LayerwisePassTest {
    private static final int WINDOW = 64;
    private static final int BATCH = 4;
    private static JavaSparkContext sc;
    private static List<String> data;

    @BeforeAll
    static void startSpark(@TempDir Path dir) throws Exception {
        sc = SparkContexts.start("layerwise-pass-test", "local[2]");
        data = List.of(Fixtures.sysadminExcerpt(dir).toUri().toString());
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    private static EvalPlan plan(Path model, int topK, int partitions) {
        return new EvalPlan(model.toUri().toString(), data, TextSplit.TRAIN, WINDOW, topK, BATCH, partitions);
    }

    private static String whole(Path model, int topK) {
        return EvalJob.run(sc, plan(model, topK, 1)).toJson();
    }

    private static String layerwise(Path model, int topK, int partitions, LayerwisePlan pass) {
        return EvalJob.runLayerwise(sc, plan(model, topK, partitions), pass).toJson();
    }

    @Test
    void tinyMixtralLayerwiseEqualsTheWholeModelForAnyPartitioning() {
        String whole = whole(Fixtures.tinyModel(), 2);
        for (int partitions : new int[] {1, 3, 5}) {
            assertEquals(whole, layerwise(Fixtures.tinyModel(), 2, partitions, new LayerwisePlan(1, null, 4)),
                    partitions + " partitions");
        }
        assertTrue(whole.contains("\"sysadmin-excerpt.txt\""), whole);
    }

    /** Expert groups as tasks: G = 1, 2, 4 on 2 and 3 partitions, and a checkpoint after layers 2 and 4. */
    @Test
    void tinyMixtralExpertGroupsKeepTheBits(@TempDir Path dir) {
        String whole = whole(Fixtures.tinyModel(), 2);
        for (int groups : new int[] {1, 2, 4}) {
            for (int partitions : new int[] {2, 3}) {
                assertEquals(whole, layerwise(Fixtures.tinyModel(), 2, partitions,
                        new LayerwisePlan(groups, dir.toUri().toString(), 2)), "G " + groups + ", P " + partitions);
            }
        }
    }

    @Test
    void deepseekV3LayerwiseAndGroupedEqualTheWholeModel() {
        Path model = FixtureCommands.model("deepseek-v3-tiny");
        String whole = whole(model, 2);
        for (int groups : new int[] {1, 2, 4}) {
            for (int partitions : new int[] {1, 4}) {
                assertEquals(whole, layerwise(model, 2, partitions, new LayerwisePlan(groups, null, 4)),
                        "G " + groups + ", P " + partitions);
            }
        }
    }

    /**
     * With and without the importance sums of every linear layer (--imatrix: the attention's and the dense MLP's
     * inputs gathered on the pass, the MoE blocks' in the hook): exactly the whole-model run's statistics.
     */
    @Test
    void calibrateLayerwiseAndGroupedGiveTheWholeModelsStatistics() {
        for (Path model : List.of(Fixtures.tinyModel(), FixtureCommands.model("deepseek-v3-tiny"))) {
            String uri = model.toUri().toString();
            ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(uri), new Configuration());
            for (boolean importance : new boolean[] {false, true}) {
                CalibrateJob.Result whole = CalibrateJob.run(sc, calibration(uri, 1), config, importance);
                assertEquals(importance, whole.stats().importance() != null);
                for (int groups : new int[] {1, 2, 4}) {
                    CalibrateJob.Result layerwise = CalibrateJob.runLayerwise(sc, calibration(uri, 3), config,
                            new LayerwisePlan(groups, null, 4), importance);
                    assertTrue(whole.stats().sameAs(layerwise.stats()), model + ", G " + groups + ", importance "
                            + importance);
                    assertArrayEquals(whole.windowsPerFile(), layerwise.windowsPerFile());
                }
            }
        }
    }

    private static CalibratePlan calibration(String model, int partitions) {
        return new CalibratePlan(model, data, TextSplit.VALID, WINDOW, 0, 2, BATCH, partitions, false, null);
    }

    /** Checkpointing after every layer cuts the lineage through reliable storage and changes no bit. */
    @Test
    void checkpointedPassWritesCheckpointsAndKeepsTheBits(@TempDir Path dir) throws Exception {
        Path checkpoints = dir.resolve("checkpoints");
        String whole = whole(Fixtures.tinyModel(), 2);
        assertEquals(whole, layerwise(Fixtures.tinyModel(), 2, 3,
                new LayerwisePlan(1, checkpoints.toUri().toString(), 1)));
        try (Stream<Path> files = Files.walk(checkpoints)) {
            long parts = files.filter(p -> p.getFileName().toString().startsWith("part-")).count();
            assertTrue(parts >= 3, "expected the checkpointed RDDs' part files under " + checkpoints + ", got " + parts);
        }
    }

    /**
     * The tiny Mixtral (float32) maps 13.8 MiB whole; its largest piece is a decoder layer, 3.19 MiB (attention
     * 4 × 128², 8 experts × 3 × 128 × 256, router 8 × 128, two norms), beside the embedding with the final norm and
     * LM head, 1.00 MiB.
     */
    @Test
    void theDryRunPlansTheLargestPieceNotTheModel() {
        String plain = printed("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.get(0),
                "--dry-run");
        String layerwise = printed("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.get(0),
                "--layerwise", "--expert-groups", "2", "--dry-run");
        assertTrue(layerwise.contains("memory plan: mapped weights 3.19 MiB"), layerwise);
        assertTrue(layerwise.contains("--layerwise: weights per executor = the largest piece, layer 0, of 13.8 MiB "
                + "for the whole model; hidden states 1.00 MiB per chunk"), layerwise);
        assertTrue(plain.contains("memory plan: mapped weights 13.8 MiB") && !plain.contains("--layerwise"), plain);
        // the heap: the whole-model plan's 512 MiB + 2 slots × 4 copies of a 1 MiB chunk + 256 MiB of stored hidden
        // states = 776 MiB, in steps of 64 MiB
        assertTrue(plain.contains("heap needed 512 MiB (-Xmx512m;"), plain);
        assertTrue(layerwise.contains("heap needed 832 MiB (-Xmx832m;"), layerwise);
    }

    /** What a successful command printed to stderr (the memory plan goes to System.err). */
    private static String printed(String... args) {
        PrintStream saved = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setErr(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            CliRun run = sparkmoe(args);
            assertEquals(0, run.exitCode(), run.err());
            return captured.toString(StandardCharsets.UTF_8) + run.err();
        } finally {
            System.setErr(saved);
        }
    }

    @Test
    void flagsThatNeedLayerwiseAreRefusedInOneLineBeforeSparkStarts() {
        CliRun groups = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.get(0),
                "--expert-groups", "2");
        assertEquals(1, groups.exitCode(), groups.err());
        assertTrue(groups.firstLine().contains("--expert-groups") && groups.firstLine().contains("--layerwise"),
                groups.firstLine());
        CliRun every = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.get(0),
                "--layerwise", "--checkpoint-every", "2");
        assertEquals(1, every.exitCode(), every.err());
        assertTrue(every.firstLine().contains("--checkpoint-dir"), every.firstLine());
        CliRun tooMany = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.get(0),
                "--layerwise", "--expert-groups", "9");
        assertEquals(1, tooMany.exitCode(), tooMany.err());
        assertTrue(tooMany.firstLine().contains("--expert-groups must be at most the model's 8 experts, got 9"),
                tooMany.firstLine());
        CliRun baseline = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.get(0),
                "--layerwise", "--baseline", Fixtures.tinyModel().toString());
        assertEquals(1, baseline.exitCode(), baseline.err());
        assertTrue(baseline.firstLine().contains("drop --baseline, or --layerwise"), baseline.firstLine());
        CliRun adapter = sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data", data.get(0),
                "--layerwise", "--adapter", data.get(0) + "-adapter", "--out", data.get(0) + "-calib");
        assertEquals(1, adapter.exitCode(), adapter.err());
        assertTrue(adapter.firstLine().contains("drop --adapter, or --layerwise"), adapter.firstLine());
    }
}
