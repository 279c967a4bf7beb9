package org.sparkmoe.tests;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.SparkContexts;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/** The memory plan through the command line: printed by --dry-run without Spark, and a plan that cannot fit refused. */
class MemoryPlanCliTest {
    @TempDir
    Path dir;

    /** A run's exit code and everything it printed on stderr (the plan goes to System.err). */
    private record Printed(CliRun run, String err) {
    }

    private static Printed printing(List<String> args) {
        PrintStream saved = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setErr(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            CliRun run = sparkmoe(args);
            return new Printed(run, captured.toString(StandardCharsets.UTF_8) + run.err());
        } finally {
            System.setErr(saved);
        }
    }

    /** The per-slot activations of a printed plan ("activations 1.23 MiB"), in bytes. */
    private static double activations(String printed) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile(" activations ([0-9.]+) (B|KiB|MiB|GiB)")
                .matcher(printed);
        assertTrue(m.find(), printed);
        return Double.parseDouble(m.group(1)) * (1L << (10 * List.of("B", "KiB", "MiB", "GiB").indexOf(m.group(2))));
    }

    private static List<String> command(String name, String... more) {
        List<String> args = new ArrayList<>(List.of(name, "--model", Fixtures.tinyModel().toString(),
                "--data", Fixtures.corpus("sysadmin.txt").toString()));
        args.addAll(List.of(more));
        return args;
    }

    @Test
    void dryRunPrintsThePlanAndStartsNothing() {
        int before = SparkContexts.started();
        Path report = dir.resolve("report.json");
        Printed eval = printing(command("eval", "--dry-run", "--master", "local[2]", "--out", report.toString()));
        assertEquals(0, eval.run().exitCode(), eval.err());
        assertTrue(eval.err().contains("memory plan: eval per executor JVM of local[2], heap "), eval.err());
        assertTrue(eval.err().contains("memory plan: mapped weights "), eval.err());
        assertTrue(eval.err().contains("memory plan: native "), eval.err());
        assertFalse(Files.exists(report), "--dry-run wrote the report");

        Path out = dir.resolve("train-out");
        Printed train = printing(command("train", "--dry-run", "--steps", "2", "--out", out.toString()));
        assertEquals(0, train.run().exitCode(), train.err());
        assertTrue(train.err().contains("memory plan: per round: partials 2 × "), train.err());
        assertTrue(train.err().contains(" averaged on the driver "), "the tiny model's LoRA state: " + train.err());
        assertTrue(train.err().contains("memory plan: activations of every layer kept for the backward"), train.err());
        assertTrue(java.util.regex.Pattern.compile("memory plan: heap needed [0-9.]+ [KMG]iB \\(-Xmx[0-9]+m; ")
                .matcher(train.err()).find(), "the line the launcher reads its -Xmx from: " + train.err());
        assertFalse(Files.exists(out), "--dry-run created --out");
        Printed checkpointed = printing(command("train", "--dry-run", "--steps", "2", "--checkpoint-activations",
                "--out", out.toString()));
        assertEquals(0, checkpointed.run().exitCode(), checkpointed.err());
        assertTrue(checkpointed.err().contains("memory plan: activations checkpointed (--checkpoint-activations)"),
                checkpointed.err());
        assertTrue(activations(checkpointed.err()) < activations(train.err()),
                "the 4-layer model's checkpointed activations are smaller: " + checkpointed.err());

        Printed calibrate = printing(command("calibrate", "--dry-run", "--out", dir.resolve("calib").toString()));
        assertEquals(0, calibrate.run().exitCode(), calibrate.err());
        assertTrue(calibrate.err().contains("memory plan: calibrate per executor JVM"), calibrate.err());
        assertEquals(before, SparkContexts.started(), "--dry-run started Spark");
    }

    /**
     * surgery lowrank's distillation plans its pass (the hidden states' heap, which the launcher reads) and a layer's
     * training; a calibration set whose [T, D] is over the executor's memory is refused naming --distill-tokens.
     */
    @Test
    void theDistillationsPlanHoldsItsPassAndALayersTraining() {
        int before = SparkContexts.started();
        List<String> lowrank = List.of("surgery", "lowrank", "--model", Fixtures.tinyModel().toString(), "--rank", "8",
                "--out", dir.resolve("lowrank").toString(), "--dry-run");
        Printed plain = printing(lowrank);
        assertEquals(0, plain.run().exitCode(), plain.err());
        assertTrue(plain.err().contains("memory plan: heap 1.00 GiB (-Xmx1024m: the launcher's default for surgery)"),
                plain.err());
        List<String> distill = new ArrayList<>(lowrank);
        distill.addAll(List.of("--distill-steps", "5", "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--window", "128"));
        List<String> local = new ArrayList<>(distill);
        local.addAll(List.of("--master", "local[2]"));
        Printed planned = printing(local);
        assertEquals(0, planned.run().exitCode(), planned.err());
        assertTrue(planned.err().contains("memory plan: distillation: the original model runs as a layer-sequential "
                + "pass, its largest piece "), planned.err());
        // 1.00 GiB + 2 slots × 4 copies × [8·128, 128] floats (512 KiB) + 256 MiB = 1.26 GiB → 1344 MiB in 64 MiB steps
        assertTrue(planned.err().contains("memory plan: heap needed 1.31 GiB (-Xmx1344m; "), planned.err());

        distill.addAll(List.of("--master", "yarn", "--distill-tokens", "4000000"));
        Printed refused = printing(distill);
        assertEquals(1, refused.run().exitCode(), refused.err());
        String line = refused.run().firstLine();
        // X, its copy and Y: 3 × 4,000,000 × 128 floats = 5.72 GiB, over YARN's default overhead (384 MiB)
        assertTrue(line.startsWith("lowrank: error: memory plan: an executor needs "), line);
        assertTrue(line.contains("for a distillation task: a pass task on one chunk, or a layer's training on X and Y "
                + "[T, D]), over spark.executor.memoryOverhead 384 MiB"), line);
        assertTrue(line.matches(".*; lower --distill-tokens or --window, or raise spark.executor.memoryOverhead to at "
                + "least [0-9]+m, or lower spark.executor.cores"), line);
        assertEquals(before, SparkContexts.started(), "--dry-run or the refusal started Spark");
    }

    @Test
    void aPlanOverTheContainersMemoryIsRefusedBeforeSparkStarts() {
        int before = SparkContexts.started();
        // 64 windows of 512 tokens in one task slot: ~0.55 GB of activations, over YARN's default overhead (384 MiB)
        Printed run = printing(command("eval", "--master", "yarn", "--window", "512", "--batch-windows", "64"));
        assertEquals(1, run.run().exitCode(), run.err());
        String line = run.run().firstLine();
        assertTrue(line.startsWith("eval: error: memory plan: an executor needs "), line);
        assertTrue(line.contains("over spark.executor.memoryOverhead 384 MiB"), line);
        assertTrue(line.matches(".*; lower --batch-windows or --window, or raise spark.executor.memoryOverhead to at "
                + "least [0-9]+m, or lower spark.executor.cores"), line);
        assertEquals(before, SparkContexts.started(), "Spark started before the plan was refused");
    }
}
