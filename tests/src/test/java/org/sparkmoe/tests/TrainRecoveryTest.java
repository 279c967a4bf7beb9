package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.text.TextSplit;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * {@code train} when runs collide or are cut off: a second run on a locked --out is refused and a dead run's lock is
 * taken over; a damaged checkpoint is refused on --resume, naming the file; a lost {@code latest} pointer falls back
 * to the newest complete checkpoint; temporaries a cut-off write left behind are removed.
 */
class TrainRecoveryTest {
    private static Path data;

    @TempDir
    Path dir;

    /** The first 40,000 characters of sysadmin.txt: ~300 windows of 32 tokens in the train split. */
    @BeforeAll
    static void excerpt(@TempDir Path tmp) throws Exception {
        data = Fixtures.sysadminExcerpt(tmp);
    }

    /** S steps in rounds of 2, 2 windows of 32 tokens, w1 and w2 at rank 4, a checkpoint every round. */
    private static String[] train(Path out, int steps, String... more) {
        List<String> args = new ArrayList<>(List.of("train", "--model", Fixtures.tinyModel().toString(),
                "--data", data.toString(), "--out", out.toString(), "--steps", Integer.toString(steps),
                "--averaging-frequency", "2",
                "--window", "32", "--batch-windows", "2", "--rank", "4", "--alpha", "8", "--targets", "w1,w2",
                "--checkpoint-every", "1", "--master", "local[2]", "--partitions", "2"));
        args.addAll(List.of(more));
        return args.toArray(String[]::new);
    }

    private static TrainPlan plan(Path out) {
        Configuration conf = new Configuration();
        return new TrainPlan(Paths.qualify(Fixtures.tinyModel().toString(), conf),
                List.of(Paths.qualify(data.toString(), conf)), TextSplit.TRAIN, 32, 2, 6, 2, 2,
                Paths.qualify(out.toString(), conf), 1, false,
                List.of(Projection.GATE, Projection.DOWN), 4, 8, false, 1e-3, 0, 0, 1.0, null, 42);
    }

    /** A run and everything it printed to stderr (its progress lines as well as the error line). */
    private record Printed(CliRun run, String stderr) {
    }

    private static Printed printing(String[] args) {
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

    private static String host() throws Exception {
        return InetAddress.getLocalHost().getHostName();
    }

    @Test
    void aLockedOutIsRefusedAndADeadRunsLockIsTakenOver() throws Exception {
        Path out = dir.resolve("locked");
        Files.createDirectories(out);
        long alive = ProcessHandle.current().pid();
        Files.writeString(out.resolve(".sparkmoe.lock"), host() + " " + alive + " train 2026-12-05T08:00:00Z\n");
        CliRun refused = sparkmoe(train(out, 2));
        assertEquals(1, refused.exitCode(), refused.err());
        assertTrue(refused.firstLine().contains("is in use by train (pid " + alive + " on " + host()), refused.err());
        assertEquals(1, refused.err().lines().count(), refused.err());
        try (Stream<Path> files = Files.list(out)) {
            assertEquals(List.of(".sparkmoe.lock"), files.map(p -> p.getFileName().toString()).toList());
        }

        Process gone = new ProcessBuilder("true").start();
        gone.waitFor();
        Files.writeString(out.resolve(".sparkmoe.lock"), host() + " " + gone.pid() + " train 2026-12-05T08:00:00Z\n");
        Printed taken = printing(train(out, 2));
        assertEquals(0, taken.run().exitCode(), taken.stderr());
        assertTrue(taken.stderr().contains("taking over the lock of a run that is gone"), taken.stderr());
        assertFalse(Files.exists(out.resolve(".sparkmoe.lock")), "the lock is released at the end");
        assertTrue(Files.exists(out.resolve("adapter/adapter_model.safetensors")));
    }

    @Test
    void resumeWithNoCheckpointStartsAfreshSayingSo() {
        Path out = dir.resolve("early");
        Printed run = printing(train(out, 2, "--resume"));
        assertEquals(0, run.run().exitCode(), run.stderr());
        assertTrue(run.stderr().contains("--resume: no complete checkpoint under")
                && run.stderr().contains("starting afresh"), run.stderr());
        assertTrue(Files.exists(out.resolve("adapter/adapter_model.safetensors")));
    }

    @Test
    void aDamagedCheckpointIsRefusedOnResume() throws Exception {
        Path out = dir.resolve("damaged");
        InterruptedTrain.stopAfterRound(plan(out), 1);
        Path state = out.resolve("checkpoints/round-000001/state.safetensors");
        try (RandomAccessFile f = new RandomAccessFile(state.toFile(), "rw")) {
            long at = f.length() - 5;
            f.seek(at);
            int b = f.read();
            f.seek(at);
            f.write(b ^ 0x10);                                   // one flipped bit in the last tensor
        }
        CliRun resumed = sparkmoe(train(out, 6, "--resume"));
        assertEquals(1, resumed.exitCode(), resumed.err());
        assertTrue(resumed.firstLine().contains("checkpoint file ") && resumed.firstLine().contains("state.safetensors")
                && resumed.firstLine().contains("is damaged"), resumed.err());
        assertFalse(Files.exists(out.resolve("adapter")), "nothing written from a damaged state");
    }

    @Test
    void aLostLatestPointerFallsBackToTheNewestCompleteCheckpoint() throws Exception {
        Path out = dir.resolve("cut");
        InterruptedTrain.stopAfterRound(plan(out), 1);
        Files.delete(out.resolve("checkpoints/latest"));        // as a kill inside the pointer's replacement did
        Path stale = out.resolve("checkpoints/.latest.tmp-0b5e3a4c-1f2d-4e6a-9b7c-2d3e4f5a6b7c");
        Files.writeString(stale, "round-0000");
        Printed resumed = printing(train(out, 6, "--resume"));
        assertEquals(0, resumed.run().exitCode(), resumed.stderr());
        assertTrue(resumed.stderr().contains("checkpoints/latest is missing; resuming from round-000001"),
                resumed.stderr());
        assertTrue(resumed.stderr().contains("resuming at round 3/3"), resumed.stderr());
        assertFalse(Files.exists(stale), "the cut-off write's temporary is removed");
        assertEquals("round-000002", Files.readString(out.resolve("checkpoints/latest")));
        assertTrue(Files.exists(out.resolve("checkpoints/round-000002/SHA256SUMS")));
        try (Stream<Path> files = Files.walk(out)) {
            assertEquals(List.of(), files.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".crc")).toList(),
                    "no Hadoop checksum side files beside the outputs");
        }
    }
}
