package org.sparkmoe.driver.train;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

/**
 * train-log.jsonl is rewritten at most once a second while rounds go on (a rewrite costs more than 2% of a small
 * model's round), and {@link TrainOutputs#writeLog} brings it up to date when a run stops in between.
 */
class TrainOutputsLogTest {
    @TempDir
    Path dir;

    private static RoundLog round(long r) {
        return new RoundLog(r, r + 1, 3.0, 2.9, 1.0, 1e-3, 1024, 0.5, 0.45, 2, 100, 200, -1, 0);
    }

    @Test
    void theLogLagsAtMostASecondAndIsWrittenWhenTheRunStops() throws Exception {
        Path out = dir.resolve("run");
        TrainPlan plan = new TrainPlan("file:///no/model", List.of("file:///no/data.txt"), TextSplit.TRAIN, 32, 2, 50,
                1, 2, out.toUri().toString(), 100, false, List.of(Projection.GATE), 4, 8, false, 1e-3, 0, 0, 1.0,
                null, 42);
        TrainOutputs outputs = new TrainOutputs(plan, new Configuration());
        Path log = out.resolve(TrainOutputs.LOG);
        outputs.roundDone(round(0), () -> {
            throw new AssertionError("no checkpoint before round 100");
        });
        assertEquals(1, Files.readAllLines(log).size(), "the first round is written at once");
        for (long r = 1; r < 5; r++) {
            outputs.roundDone(round(r), () -> null);
        }
        assertEquals(1, Files.readAllLines(log).size(), "rounds within a second of the last write wait");
        outputs.writeLog();
        List<String> lines = Files.readAllLines(log);
        assertEquals(5, lines.size());
        assertEquals(round(4).toJson(), lines.get(4));
        Thread.sleep(1_050);
        outputs.roundDone(round(5), () -> null);
        assertEquals(6, Files.readAllLines(log).size(), "a round a second after the last write is written");
        try (var files = Files.list(out)) {
            assertFalse(files.anyMatch(f -> f.getFileName().toString().contains(".tmp")), "no temporary left");
        }
    }
}
