package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.mumoe.GateActivation;
import org.sparkmoe.mumoe.MumoeForm;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.train.LoraSpec;
import org.sparkmoe.train.TrainOptions;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;

/** {@code sparkmoe train} on a real local[2] SparkContext: outputs, resume bit for bit, bad input. */
class TrainJobTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static Path data;

    @TempDir
    Path dir;

    /** The first 40,000 characters of sysadmin.txt: ~300 windows of 32 tokens in the train split. */
    @BeforeAll
    static void excerpt(@TempDir Path tmp) throws Exception {
        data = Fixtures.sysadminExcerpt(tmp);
    }

    /**
     * 3 rounds of 2 steps, 2 windows of 32 tokens per step and partition, w1 and w2, checkpoint every round;
     * {@code more} holds flags (a flag followed by its value, if it takes one) that replace or add to these.
     */
    private static List<String> train(Path out, String... more) {
        Map<String, String> flags = new LinkedHashMap<>();
        String[] defaults = {"--model", Fixtures.tinyModel().toString(), "--data", data.toString(),
                "--out", out.toString(), "--steps", "6", "--averaging-frequency", "2", "--window", "32",
                "--batch-windows", "2", "--rank", "4", "--alpha", "8", "--targets", "w1,w2", "--checkpoint-every", "1",
                "--master", "local[2]", "--partitions", "2"};
        for (int i = 0; i < defaults.length; i += 2) {
            flags.put(defaults[i], defaults[i + 1]);
        }
        for (int i = 0; i < more.length; i++) {
            boolean hasValue = i + 1 < more.length && !more[i + 1].startsWith("--");
            flags.put(more[i], hasValue ? more[++i] : null);
        }
        List<String> args = new ArrayList<>(List.of("train"));
        flags.forEach((flag, value) -> {
            args.add(flag);
            if (value != null) {
                args.add(value);
            }
        });
        return args;
    }

    private TrainPlan plan(Path out) {
        Configuration conf = new Configuration();
        return new TrainPlan(Paths.qualify(Fixtures.tinyModel().toString(), conf),
                List.of(Paths.qualify(data.toString(), conf)), TextSplit.TRAIN, 32, 2, 6, 2, 2,
                Paths.qualify(out.toString(), conf), 1, false,
                List.of(Projection.GATE, Projection.DOWN), 4, 8, false, 1e-3, 0, 0, 1.0, null, 42);
    }

    /** The μMoE flags of {@link #mumoeTrain}: CP, 16 experts of rank 4 beside q_proj, o_proj and every MoE block. */
    private static final MumoeConfig MUMOE = new MumoeConfig(MumoeForm.CP, 16, new int[] {4},
            MumoeConfig.parseTargets("q_proj,o_proj,moe", "test"));

    /** {@link #train} with a μMoE adapter ({@link #MUMOE}) instead of LoRA: LoRA's --rank, --alpha, --targets dropped. */
    private static List<String> mumoeTrain(Path out, String... more) {
        List<String> args = train(out, more);
        for (String lora : List.of("--rank", "--alpha", "--targets")) {
            int at = args.indexOf(lora);
            args.subList(at, at + 2).clear();
        }
        args.addAll(List.of("--adapter", "mumoe-cp", "--mumoe-experts", "16", "--mumoe-rank", "4", "--mumoe-targets",
                "q_proj,o_proj,moe"));
        return args;
    }

    /**
     * {@link #mumoeTrain} with a hierarchical adapter of {@code form} ({@link #levels}: --mumoe-experts 4,4; TR
     * --adapter mumoe-tr --mumoe-rank 4,4,4,4, one rank per core of the ring).
     */
    private static List<String> levelsTrain(MumoeForm form, Path out, String... more) {
        List<String> args = mumoeTrain(out, more);
        args.set(args.indexOf("--mumoe-experts") + 1, "4,4");
        args.set(args.indexOf("--adapter") + 1, "mumoe-" + form.id());
        args.set(args.indexOf("--mumoe-rank") + 1, form == MumoeForm.CP ? "4" : "4,4,4,4");
        return args;
    }

    /** {@link #MUMOE} with 4·4 experts, one gate per level, in {@code form}. */
    private static MumoeConfig levels(MumoeForm form) {
        return new MumoeConfig(form, new int[] {4, 4}, form == MumoeForm.CP ? new int[] {4} : new int[] {4, 4, 4, 4},
                MumoeConfig.parseTargets("q_proj,o_proj,moe", "test"));
    }

    /** {@link #plan} of {@link #mumoeTrain}. */
    private TrainPlan mumoePlan(Path out) {
        return mumoePlan(out, MUMOE);
    }

    /** {@link #plan} of a μMoE run of {@code mumoe}. */
    private TrainPlan mumoePlan(Path out, MumoeConfig mumoe) {
        TrainPlan lora = plan(out);
        TrainOptions o = lora.options();
        return new TrainPlan(lora.model(), lora.windows(), lora.rounds(), new TrainOptions(LoraSpec.mumoe(mumoe),
                o.schedule(), o.optimizer(), o.maxGradNorm(), o.auxLossCoef(), o.seed(), o.checkpointActivations(),
                o.passWorkspace()),
                lora.out(), false, lora.device());
    }

    @Test
    void writesAPeftAdapterAndOneLogLinePerRound() throws Exception {
        Path out = dir.resolve("run");
        CliRun run = sparkmoe(train(out));
        assertEquals(0, run.exitCode(), run.err());

        JsonNode config = JSON.readTree(out.resolve("adapter/adapter_config.json").toFile());
        assertEquals("LORA", config.get("peft_type").asText());
        assertEquals(4, config.get("r").asInt());
        assertEquals(8.0, config.get("lora_alpha").asDouble());
        try (SafeTensorsFile adapter = SafeTensorsFile.open(out.resolve("adapter/adapter_model.safetensors"))) {
            String a = "base_model.model.model.layers.0.block_sparse_moe.experts.3.w1.lora_A.weight";
            String b = "base_model.model.model.layers.3.block_sparse_moe.experts.7.w2.lora_B.weight";
            assertArrayEquals(new long[] {4, 128}, adapter.info(a).shape());
            assertArrayEquals(new long[] {128, 4}, adapter.info(b).shape());
            double bNorm = 0;
            for (int e = 0; e < 8; e++) {
                bNorm += adapter.readFloat("base_model.model.model.layers.0.block_sparse_moe.experts." + e
                        + ".w1.lora_B.weight").norm2Number().doubleValue();
            }
            assertTrue(bNorm > 0, "layer 0's w1 B matrices left their zero init");
            assertEquals(4 * 8 * 2 * 2, adapter.names().size(), "layers × experts × (w1, w2) × (A, B)");
        }
        List<String> log = Files.readAllLines(out.resolve("train-log.jsonl"));
        assertEquals(3, log.size());
        for (int round = 0; round < 3; round++) {
            JsonNode line = JSON.readTree(log.get(round));
            assertEquals(round, line.get("round").asInt());
            assertEquals(2L * (round + 1), line.get("step").asLong());
            assertTrue(Double.isFinite(line.get("loss").asDouble()) && line.get("loss").asDouble() > 0, log.get(round));
            assertTrue(line.get("bytes_averaged").asLong() > 0, log.get(round));
            // this JVM ran the tasks: its anonymous RSS is at least its heap in use
            long heapUsed = Runtime.getRuntime().totalMemory() - Runtime.getRuntime().freeMemory();
            assertTrue(line.get("executor_rss_anon_bytes").asLong() > Math.min(heapUsed, 64L << 20), log.get(round));
            long heap = line.get("executor_heap_committed_bytes").asLong();
            assertTrue(heap > 0 && heap <= Runtime.getRuntime().maxMemory(), log.get(round));
        }
    }

    /** A run stopped after its second round and resumed with --resume ends with the same adapter, bit for bit. */
    @Test
    void resumeReproducesAnUninterruptedRun() throws Exception {
        Path whole = dir.resolve("whole");
        assertEquals(0, sparkmoe(train(whole)).exitCode());
        Path interrupted = dir.resolve("interrupted");
        InterruptedTrain.stopAfterRound(plan(interrupted), 1);
        assertResumedEqualsWhole(whole, interrupted, train(interrupted, "--resume"));
    }

    /**
     * --averaging gradients (one step per round on the partitions' mean gradient) resumes bit for bit too; its
     * checkpoint does not resume as a parameter-averaging run, and the refusal names the flag.
     */
    @Test
    void gradientAveragingResumesBitForBit() throws Exception {
        String[] gradients = {"--averaging", "gradients", "--averaging-frequency", "1"};
        Path whole = dir.resolve("whole");
        CliRun run = sparkmoe(train(whole, gradients));
        assertEquals(0, run.exitCode(), run.err());
        Path interrupted = dir.resolve("interrupted");
        TrainPlan p = plan(interrupted);
        InterruptedTrain.stopAfterRound(new TrainPlan(p.model(), p.windows(),
                new TrainPlan.Rounds(6, 1, 2, 1, TrainPlan.Averaging.GRADIENTS), p.options(), p.out(), false,
                p.device()), 1);
        CliRun parameters = sparkmoe(train(interrupted, "--averaging-frequency", "1", "--resume"));
        assertEquals(1, parameters.exitCode(), parameters.err());
        assertTrue(parameters.err().contains("was written with --averaging=gradients; this run does not set "
                + "--averaging"), parameters.err());
        List<String> resume = new ArrayList<>(train(interrupted, gradients));
        resume.add("--resume");
        assertResumedEqualsWhole(whole, interrupted, resume);
    }

    /**
     * The same for a μMoE adapter (CP, 16 experts, q_proj, o_proj and moe): resumed bit for bit; what train wrote is
     * a μMoE adapter folder that eval --adapter and calibrate --adapter read (perplexity no longer the base's), and
     * merge refuses it in one line.
     */
    @Test
    void mumoeResumeReproducesAnUninterruptedRunAndEvalReadsItsAdapter() throws Exception {
        Path whole = dir.resolve("whole");
        CliRun run = sparkmoe(mumoeTrain(whole));
        assertEquals(0, run.exitCode(), run.err());
        Path interrupted = dir.resolve("interrupted");
        InterruptedTrain.stopAfterRound(mumoePlan(interrupted), 1);
        assertResumedEqualsWhole(whole, interrupted, mumoeTrain(interrupted, "--resume"));

        Path adapter = whole.resolve("adapter");
        JsonNode config = JSON.readTree(adapter.resolve("adapter_config.json").toFile());
        assertEquals("MUMOE", config.get("adapter_type").asText());
        assertEquals("cp", config.get("form").asText());
        try (SafeTensorsFile tensors = SafeTensorsFile.open(adapter.resolve("adapter_model.safetensors"))) {
            assertEquals(4 * 3 * 4, tensors.names().size(), "layers × (q_proj, o_proj, moe) × (gate, expert, in, out)");
            assertArrayEquals(new long[] {128, 4},
                    tensors.info("model.layers.2.self_attn.o_proj.mumoe.out").shape());
            assertTrue(tensors.readFloat("model.layers.0.block_sparse_moe.mumoe.out").norm2Number().doubleValue() > 0,
                    "the output factor left its zero init");
        }
        double base = evalPpl(null, "base");
        double adapted = evalPpl(adapter, "adapted");
        assertNotEquals(base, adapted, "eval --adapter applies the μMoE terms");

        CliRun merge = sparkmoe("merge", "--model", Fixtures.tinyModel().toString(), "--adapter", adapter.toString(),
                "--out", dir.resolve("merged").toString());
        assertEquals(1, merge.exitCode(), merge.err());
        assertTrue(merge.err().contains("cannot be merged into the base weights: its experts' mixture weights depend "
                + "on each token's input"), merge.err());
        CliRun mergeFlag = sparkmoe(mumoeTrain(dir.resolve("m"), "--merge"));
        assertEquals(1, mergeFlag.exitCode(), mergeFlag.err());
        assertTrue(mergeFlag.err().contains("--merge: a μMoE adapter cannot be merged"), mergeFlag.err());

        CliRun loraFlag = sparkmoe(train(dir.resolve("r"), "--adapter", "mumoe-cp"));
        assertEquals(1, loraFlag.exitCode(), loraFlag.err());
        assertTrue(loraFlag.err().contains("--rank applies to --adapter lora, not mumoe-cp"), loraFlag.err());

        CliRun calibrate = sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data",
                data.toString(), "--window", "32", "--max-tokens-per-file", "256", "--adapter", adapter.toString(),
                "--master", "local[2]", "--out", dir.resolve("calib").toString());
        assertEquals(0, calibrate.exitCode(), calibrate.err());
    }

    /**
     * A hierarchical μMoE adapter (CP, --mumoe-experts 4,4): resumed bit for bit; its adapter_config.json lists the
     * levels and its tensors a gate and an expert factor per level; eval --adapter reads it, muting one product expert
     * (numbered n₁·4 + n₂) changes its perplexity, calibrate numbers the 16 products; TR with levels is refused.
     */
    @ParameterizedTest
    @EnumSource(MumoeForm.class)
    void hierarchicalMumoeResumesBitForBitAndEvalCalibrateAndMuteReadIt(MumoeForm form) throws Exception {
        String name = "levels-" + form.id();
        Path whole = dir.resolve(name + "-whole");
        CliRun run = sparkmoe(levelsTrain(form, whole));
        assertEquals(0, run.exitCode(), run.err());
        Path interrupted = dir.resolve(name + "-interrupted");
        InterruptedTrain.stopAfterRound(mumoePlan(interrupted, levels(form)), 1);
        assertResumedEqualsWhole(whole, interrupted, levelsTrain(form, interrupted, "--resume"));

        Path adapter = whole.resolve("adapter");
        JsonNode config = JSON.readTree(adapter.resolve("adapter_config.json").toFile());
        assertEquals("[4,4]", config.get("experts").toString());
        try (SafeTensorsFile tensors = SafeTensorsFile.open(adapter.resolve("adapter_model.safetensors"))) {
            assertEquals(4 * 3 * 6, tensors.names().size(), "layers × sites × (gate.0, gate.1, two expert factors "
                    + "or cores, in, out)");
            assertArrayEquals(new long[] {128, 4},
                    tensors.info("model.layers.1.block_sparse_moe.mumoe.gate.1").shape());
            if (form == MumoeForm.TR) {
                assertArrayEquals(new long[] {4, 4, 4},
                        tensors.info("model.layers.1.block_sparse_moe.mumoe.core.expert.1").shape());
            }
        }
        double base = evalPpl(null, name + "-base");
        double adapted = evalPpl(adapter, name + "-adapted");
        assertNotEquals(base, adapted, "eval --adapter applies the hierarchical terms");
        double muted = evalPpl(adapter, name + "-muted", "--mute-experts", "0.moe:13,2.q_proj:0");
        assertNotEquals(adapted, muted, "muting product experts (3, 1) and (0, 0) changes the model");
        CliRun outside = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", data.toString(),
                "--window", "32", "--master", "local[2]", "--adapter", adapter.toString(), "--mute-experts", "16",
                "--out", dir.resolve(name + "-outside.json").toString());
        assertEquals(1, outside.exitCode(), outside.err());
        assertTrue(outside.err().contains("--mute-experts 16: the μMoE adapter has 16 experts per site (0..15)"),
                outside.err());

        Path calib = dir.resolve(name + "-calib");
        CliRun calibrate = sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data",
                data.toString(), "--window", "32", "--max-tokens-per-file", "256", "--adapter", adapter.toString(),
                "--master", "local[2]", "--out", calib.toString());
        assertEquals(0, calibrate.exitCode(), calibrate.err());
        JsonNode experts = JSON.readTree(calib.resolve("mumoe-experts.json").toFile());
        assertEquals(16, experts.get("experts").asInt());
        assertEquals("[4,4]", experts.get("levels").toString());
        for (JsonNode site : experts.get("sites")) {
            for (JsonNode file : site.get("files")) {
                assertEquals(16, file.get("share").size());
            }
        }
    }

    /**
     * --mumoe-gate entmax15 ({@link #MUMOE} gated by entmax-1.5): resumed bit for bit; adapter_config.json says
     * "gate": "entmax15" and the run's signature mumoe-gate=entmax15, so resuming it with the default softmax gate is
     * refused; eval --adapter reads it, with and without a muted expert, and calibrate --adapter runs on its gates.
     */
    @Test
    void entmaxGatedMumoeResumesBitForBitAndEvalCalibrateAndMuteReadIt() throws Exception {
        Path whole = dir.resolve("entmax-whole");
        CliRun run = sparkmoe(mumoeTrain(whole, "--mumoe-gate", "entmax15"));
        assertEquals(0, run.exitCode(), run.err());
        Path interrupted = dir.resolve("entmax-interrupted");
        MumoeConfig entmax = new MumoeConfig(MumoeForm.CP, new int[] {16}, new int[] {4},
                MumoeConfig.parseTargets("q_proj,o_proj,moe", "test"), GateActivation.ENTMAX15);
        InterruptedTrain.stopAfterRound(mumoePlan(interrupted, entmax), 1);
        CliRun softmax = sparkmoe(mumoeTrain(interrupted, "--resume"));
        assertEquals(1, softmax.exitCode(), softmax.err());
        assertTrue(softmax.err().contains("mumoe-gate=entmax15"), softmax.err());
        assertResumedEqualsWhole(whole, interrupted, mumoeTrain(interrupted, "--resume", "--mumoe-gate", "entmax15"));

        Path adapter = whole.resolve("adapter");
        JsonNode config = JSON.readTree(adapter.resolve("adapter_config.json").toFile());
        assertEquals("entmax15", config.get("gate").asText());
        double base = evalPpl(null, "entmax-base");
        double adapted = evalPpl(adapter, "entmax-adapted");
        assertNotEquals(base, adapted, "eval --adapter applies the entmax-gated terms");
        double muted = evalPpl(adapter, "entmax-muted", "--mute-experts", "0,5,9");
        assertNotEquals(adapted, muted, "muting experts 0, 5 and 9 everywhere changes the model");
        CliRun calibrate = sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data",
                data.toString(), "--window", "32", "--max-tokens-per-file", "256", "--adapter", adapter.toString(),
                "--master", "local[2]", "--out", dir.resolve("entmax-calib").toString());
        assertEquals(0, calibrate.exitCode(), calibrate.err());
    }

    /** eval's perplexity over the excerpt's test split, with {@code adapter} (or none) and {@code more} flags. */
    private double evalPpl(Path adapter, String name, String... more) throws Exception {
        Path out = dir.resolve(name + ".json");
        List<String> args = new ArrayList<>(List.of("eval", "--model", Fixtures.tinyModel().toString(), "--data",
                data.toString(), "--window", "32", "--master", "local[2]", "--out", out.toString()));
        if (adapter != null) {
            args.addAll(List.of("--adapter", adapter.toString()));
        }
        args.addAll(List.of(more));
        CliRun eval = sparkmoe(args);
        assertEquals(0, eval.exitCode(), eval.err());
        return JSON.readTree(out.toFile()).get("all").get("ppl").asDouble();
    }

    /** Resumes {@code interrupted} with {@code resume}: its adapter and losses equal {@code whole}'s, bit for bit. */
    private static void assertResumedEqualsWhole(Path whole, Path interrupted, List<String> resume) throws Exception {
        assertEquals(2, Files.readAllLines(interrupted.resolve("train-log.jsonl")).size());
        CliRun resumed = sparkmoe(resume);
        assertEquals(0, resumed.exitCode(), resumed.err());

        assertArrayEquals(Files.readAllBytes(whole.resolve("adapter/adapter_model.safetensors")),
                Files.readAllBytes(interrupted.resolve("adapter/adapter_model.safetensors")));
        List<String> wholeLog = Files.readAllLines(whole.resolve("train-log.jsonl"));
        List<String> resumedLog = Files.readAllLines(interrupted.resolve("train-log.jsonl"));
        assertEquals(wholeLog.size(), resumedLog.size());
        for (int i = 0; i < wholeLog.size(); i++) {
            assertEquals(JSON.readTree(wholeLog.get(i)).get("loss"), JSON.readTree(resumedLog.get(i)).get("loss"));
        }
    }

    /**
     * --checkpoint-activations recomputes each layer in the backward instead of keeping it: the same adapter, bit for
     * bit, and the same losses; and a run resumes across the flag (it is not in the resume signature).
     */
    @Test
    void checkpointedActivationsWriteTheSameAdapter() throws Exception {
        Path kept = dir.resolve("kept");
        assertEquals(0, sparkmoe(train(kept, "--train-router")).exitCode());
        Path recomputed = dir.resolve("recomputed");
        CliRun run = sparkmoe(train(recomputed, "--train-router", "--checkpoint-activations"));
        assertEquals(0, run.exitCode(), run.err());
        assertArrayEquals(Files.readAllBytes(kept.resolve("adapter/adapter_model.safetensors")),
                Files.readAllBytes(recomputed.resolve("adapter/adapter_model.safetensors")));
        List<String> keptLog = Files.readAllLines(kept.resolve("train-log.jsonl"));
        List<String> recomputedLog = Files.readAllLines(recomputed.resolve("train-log.jsonl"));
        assertEquals(3, recomputedLog.size());
        for (int i = 0; i < keptLog.size(); i++) {
            assertEquals(JSON.readTree(keptLog.get(i)).get("loss"), JSON.readTree(recomputedLog.get(i)).get("loss"));
        }
    }

    @Test
    void refusesToWriteOverAnotherRun() throws Exception {
        Path out = dir.resolve("busy");
        Files.createDirectories(out);
        Files.writeString(out.resolve("keep.txt"), "precious");
        CliRun run = sparkmoe(train(out));
        assertEquals(1, run.exitCode());
        assertTrue(run.err().startsWith("train: error: --out ") && run.err().contains("--resume"), run.err());
        assertEquals("precious", Files.readString(out.resolve("keep.txt")));
    }

    @Test
    void resumeNeedsACheckpointWithTheSameOptions() throws Exception {
        CliRun nothing = sparkmoe(train(dir.resolve("empty"), "--steps", "2", "--resume"));
        assertEquals(0, nothing.exitCode(), nothing.err());   // no checkpoint yet: it starts afresh
        assertTrue(Files.exists(dir.resolve("empty/adapter/adapter_model.safetensors")));

        Path out = dir.resolve("run");
        assertEquals(0, sparkmoe(train(out, "--steps", "2")).exitCode());
        CliRun other = sparkmoe(train(out, "--steps", "2", "--resume", "--rank", "8"));
        assertEquals(1, other.exitCode());
        assertTrue(other.err().contains("rank=4") && other.err().contains("rank=8"), other.err());
        // the option that differs is named, not two signatures of every option
        assertTrue(other.err().contains("was written with --rank=4; this run has --rank=8"), other.err());
        assertFalse(other.err().contains("seed="), other.err());
        assertEquals(1, other.err().lines().count(), other.err());
    }

    @Test
    void badFlagsAndBadDataAreOneLineErrors() {
        CliRun target = sparkmoe(train(dir.resolve("a"), "--targets", "w1,w4"));
        assertEquals(2, target.exitCode());
        assertTrue(target.err().contains("unknown LoRA target 'w4'"), target.err());

        CliRun steps = sparkmoe(train(dir.resolve("b"), "--steps", "0"));
        assertEquals(1, steps.exitCode());
        assertTrue(steps.err().startsWith("train: error: --steps must be ≥ 1, got 0"), steps.err());

        CliRun averaging = sparkmoe(train(dir.resolve("e"), "--averaging", "gradients"));   // --averaging-frequency 2
        assertEquals(1, averaging.exitCode());
        assertEquals("train: error: --averaging gradients takes one optimiser step per round, on the mean of the "
                + "partitions' gradients: --averaging-frequency must be 1, got 2", averaging.err().strip());
        CliRun mode = sparkmoe(train(dir.resolve("f"), "--averaging", "moments"));
        assertEquals(1, mode.exitCode());
        assertEquals("train: error: --averaging must be parameters or gradients, got 'moments'", mode.err().strip());

        CliRun partitions = sparkmoe(train(dir.resolve("c"), "--window", "256", "--partitions", "200"));
        assertEquals(1, partitions.exitCode());
        assertTrue(partitions.err().contains("fewer than the 200 partitions"), partitions.err());
        assertNotEquals(0, sparkmoe(train(dir.resolve("d"), "--model", dir.resolve("nope").toString())).exitCode());
    }
}
