package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.train.TrainPlan;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/**
 * Recovering a low-rank model on the tiny Mixtral: {@code surgery lowrank --distill-steps} (layer-wise distillation
 * as Spark tasks) lowers every layer's output error, writes the same bytes for any partition count and evals; and
 * {@code train} on a low-rank model trains its experts end to end, writes OUT/model in the same format, which evals
 * better than the untrained conversion on the text it trained on; an interrupted run resumes to the same bytes.
 */
class LowRankRecoveryTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path tmp;

    private static Path lowrank(String name, String... more) {
        Path out = tmp.resolve(name);
        List<String> args = new ArrayList<>(List.of("surgery", "lowrank", "--model", Fixtures.tinyModel().toString(),
                "--rank", "8", "--out", out.toString(), "--master", "local[2]"));
        args.addAll(List.of(more));
        CliRun run = sparkmoe(args);
        assertEquals(0, run.exitCode(), run.err());
        return out;
    }

    private static List<String> distill(String partitions) {
        return List.of("--distill-steps", "30", "--distill-lr", "1e-2", "--distill-batch", "256", "--window", "128",
                "--distill-tokens", "512", "--data", Fixtures.corpus("sysadmin.txt") + "," + Fixtures.corpus("fortunes.txt"),
                "--partitions", partitions);
    }

    /** Test-split perplexity of sysadmin.txt (window 128). */
    private static double ppl(Path model) throws Exception {
        Path out = tmp.resolve(model.getFileName() + "-eval.json");
        CliRun run = sparkmoe("eval", "--model", model.toString(), "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--window", "128", "--master", "local[2]", "--out", out.toString());
        assertEquals(0, run.exitCode(), run.err());
        double ppl = JSON.readTree(out.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1, "ppl " + ppl);
        return ppl;
    }

    @Test
    void distillationLowersEveryLayersErrorForAnyPartitioningAndEvals() throws Exception {
        Path two = lowrank("distilled-p2", distill("2").toArray(String[]::new));
        JsonNode report = JSON.readTree(two.resolve("surgery.json").toFile());
        assertEquals(30, report.get("settings").get("distill").get("steps").asInt());
        assertEquals(4, report.get("layers").size());
        for (JsonNode layer : report.get("layers")) {
            double before = layer.get("distill_rel_mse_before").asDouble();
            double after = layer.get("distill_rel_mse_after").asDouble();
            assertTrue(before > 0 && after < before, layer.toString());
            assertEquals(2 * 512.0, layer.get("distill_tokens").asDouble(), "two files of 512 tokens");
        }
        Path one = lowrank("distilled-p1", distill("1").toArray(String[]::new));
        assertArrayEquals(Files.readAllBytes(one.resolve("model.safetensors")),
                Files.readAllBytes(two.resolve("model.safetensors")));
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(two.toUri()), CONF);
        assertEquals(8, config.low_rank_experts_rank);
        ppl(two);
        String model = Fixtures.tinyModel().toString();
        String never = tmp.resolve("never-distilled").toString();
        CliRun noData = sparkmoe("surgery", "lowrank", "--model", model, "--rank", "8", "--distill-steps", "5", "--out", never);
        assertEquals(1, noData.exitCode(), noData.err());
        assertEquals("lowrank: error: --distill-steps needs --data (calibration text files)", noData.err().strip());
        CliRun noSteps = sparkmoe("surgery", "lowrank", "--model", model, "--rank", "8", "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--out", never);
        assertEquals("lowrank: error: --data is read only by the distillation: add --distill-steps N", noSteps.err().strip());
        CliRun lrOnly = sparkmoe("surgery", "lowrank", "--model", model, "--rank", "8", "--distill-lr", "1e-3", "--out",
                never);
        assertEquals("lowrank: error: --distill-lr is read only by the distillation: add --distill-steps N",
                lrOnly.err().strip());
        CliRun warmup = sparkmoe("surgery", "lowrank", "--model", model, "--rank", "8", "--distill-steps", "5",
                "--distill-warmup", "6", "--data", Fixtures.corpus("sysadmin.txt").toString(), "--out", never);
        assertEquals("lowrank: error: --distill-warmup must be in [0, 5] (the steps), got 6", warmup.err().strip());
        assertFalse(Files.exists(Path.of(never)));
    }

    @Test
    void trainRecoversALowRankModelIntoALowRankCheckpoint() throws Exception {
        Path converted = lowrank("converted");
        Path run = tmp.resolve("train");
        String data = Fixtures.corpus("sysadmin.txt").toString();
        CliRun merge = sparkmoe("train", "--model", converted.toString(), "--data", data, "--merge", "--out",
                tmp.resolve("never").toString(), "--master", "local[2]");
        assertEquals(1, merge.exitCode(), merge.err());
        assertEquals("train: error: --merge does not apply to a low-rank model (surgery lowrank): PEFT adapters need "
                + "full experts; train writes the trained model to OUT/model", merge.err().strip());
        assertFalse(Files.exists(tmp.resolve("never").resolve("adapter")));

        CliRun train = sparkmoe("train", "--model", converted.toString(), "--data", data, "--split", "test",
                "--steps", "8", "--batch-windows", "2", "--window", "128", "--lr", "3e-3", "--out", run.toString(),
                "--master", "local[2]", "--partitions", "2");
        assertEquals(0, train.exitCode(), train.err());
        Path trained = run.resolve("model");
        assertFalse(Files.exists(run.resolve("adapter")), "no PEFT adapter for a low-rank model");
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(trained.toUri()), CONF);
        assertEquals(8, config.low_rank_experts_rank);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        try (Checkpoint t = Checkpoint.open(new org.apache.hadoop.fs.Path(trained.toUri()), CONF);
             Checkpoint c = Checkpoint.open(new org.apache.hadoop.fs.Path(converted.toUri()), CONF)) {
            assertEquals(ModelSchema.expected(config).keySet(), t.names());
            assertEquals(c.readFloat(layout.sharedBase(1, Projection.UP)), t.readFloat(layout.sharedBase(1, Projection.UP)),
                    "the shared base is frozen");
            assertEquals(c.readFloat(layout.routerGate(1)), t.readFloat(layout.routerGate(1)), "the router is frozen");
            assertFalse(c.readFloat(layout.stackedLoraB(1, Projection.UP)).equals(t.readFloat(layout.stackedLoraB(1,
                    Projection.UP))), "the experts are trained");
        }
        double before = ppl(converted);
        double after = ppl(trained);
        assertTrue(after < 0.9 * before, "ppl on the trained split " + before + " → " + after);
        resumeReproducesAnUninterruptedRun(converted, data);
    }

    /** A low-rank run stopped after its second round and resumed with --resume writes the same OUT/model, bit for bit. */
    private static void resumeReproducesAnUninterruptedRun(Path converted, String data) throws Exception {
        Configuration conf = new Configuration();
        List<String> common = List.of("train", "--model", converted.toString(), "--data", data, "--split", "valid",
                "--steps", "3", "--batch-windows", "1", "--window", "32", "--lr", "1e-3", "--checkpoint-every", "1",
                "--master", "local[2]", "--partitions", "2");
        Path whole = tmp.resolve("whole");
        List<String> wholeArgs = new ArrayList<>(common);
        wholeArgs.addAll(List.of("--out", whole.toString()));
        assertEquals(0, sparkmoe(wholeArgs).exitCode());

        Path interrupted = tmp.resolve("interrupted");
        TrainPlan plan = new TrainPlan(Paths.qualify(converted.toString(), conf), List.of(Paths.qualify(data, conf)),
                TextSplit.VALID, 32, 1, 3, 1, 2, Paths.qualify(interrupted.toString(), conf), 1, false,
                List.of(Projection.GATE, Projection.UP, Projection.DOWN), 8, 8, false, 1e-3, 0, 0, 1.0, null, 42);
        InterruptedTrain.stopAfterRound(plan, 1);
        List<String> resumeArgs = new ArrayList<>(common);
        resumeArgs.addAll(List.of("--out", interrupted.toString(), "--resume"));
        CliRun resumed = sparkmoe(resumeArgs);
        assertEquals(0, resumed.exitCode(), resumed.err());
        assertArrayEquals(Files.readAllBytes(whole.resolve("model/model.safetensors")),
                Files.readAllBytes(interrupted.resolve("model/model.safetensors")));
    }
}
