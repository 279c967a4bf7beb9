package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.calib.ExpertMap;
import org.sparkmoe.driver.SparkMoe;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.MoeTransformer;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code sparkmoe surgery} end to end on the tiny Mixtral: every output folder loads with {@link ModelFolder} (which
 * checks it with {@link ModelSchema}), eval runs on it, the tensors are what the math says, Spark partitioning does not
 * change a bit, and bad input fails with one line.
 */
class SurgeryTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int E = 8;
    private static final int LAYERS = 4;
    /** E[Σ top-m ĝ²] · 100 for m = 1..8 in every layer of the synthetic statistics. */
    private static final double[] TOPM = {100, 60, 45, 38, 34, 31, 29, 27};

    @TempDir
    static Path tmp;
    private static Path stats;
    private static Path flatStats;

    /**
     * Synthetic router-stats.json for the tiny model (100 tokens; two files). {@code stats}: expert e's logit sum in
     * layer l is 100·((e + l) mod 3); {@code flatStats}: every logit sum 0. In file a every token selects experts 0..3
     * equally, in file b experts 4..7, so routing profiles separate the halves.
     */
    @BeforeAll
    static void writeStats() throws Exception {
        stats = tmp.resolve("router-stats.json");
        Files.writeString(stats, statsJson(true));
        flatStats = tmp.resolve("flat-router-stats.json");
        Files.writeString(flatStats, statsJson(false));
    }

    private static String statsJson(boolean logits) {
        StringBuilder s = new StringBuilder("{\"model\":\"tiny\",\"top_k\":2,\"experts\":8,\"tokens\":100,\"layers\":[");
        for (int l = 0; l < LAYERS; l++) {
            double[] logitSum = new double[E];
            for (int e = 0; e < E; e++) {
                logitSum[e] = logits ? 100.0 * ((e + l) % 3) : 0;
            }
            s.append(l > 0 ? "," : "").append("{\"count\":[30,20,40,10,25,35,15,25],\"logit_sum\":")
                    .append(Arrays.toString(logitSum)).append(",\"topm_sq_sum\":").append(Arrays.toString(TOPM))
                    .append(",\"tokens\":100}");
        }
        s.append("],\"files\":{\"a\":{\"layers\":[");
        for (int l = 0; l < LAYERS; l++) {
            s.append(l > 0 ? "," : "").append("{\"count\":[25,25,25,25,0,0,0,0],\"tokens\":50}");
        }
        s.append("]},\"b\":{\"layers\":[");
        for (int l = 0; l < LAYERS; l++) {
            s.append(l > 0 ? "," : "").append("{\"count\":[0,0,0,0,25,25,25,25],\"tokens\":50}");
        }
        return s.append("]}}}").toString();
    }

    private static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    private static int sparkmoe(StringWriter err, String... args) {
        return SparkMoe.execute(new PrintWriter(err, true), args);
    }

    private static Path surgery(String name, String... args) {
        return surgery(name, stats, args);
    }

    private static Path surgery(String name, Path statsFile, String... args) {
        Path out = tmp.resolve(name);
        java.util.List<String> full = new java.util.ArrayList<>(java.util.List.of("surgery"));
        full.addAll(Arrays.asList(args));
        full.addAll(java.util.List.of("--model", Fixtures.tinyModel().toString(), "--out", out.toString(),
                "--master", "local[2]", "--stats", statsFile.toString()));
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, full.toArray(String[]::new)), err.toString());
        return out;
    }

    /** Test-split perplexity of sysadmin.txt (window 128). */
    private static double ppl(Path model) throws Exception {
        Path out = tmp.resolve(model.getFileName() + "-eval.json");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "eval", "--model", model.toString(), "--data",
                Fixtures.corpus("sysadmin.txt").toString(), "--window", "128", "--master", "local[2]",
                "--out", out.toString()), err.toString());
        double ppl = JSON.readTree(out.toFile()).get("all").get("ppl").asDouble();
        assertTrue(Double.isFinite(ppl) && ppl > 1, "ppl " + ppl);
        return ppl;
    }

    private static INDArray tensor(Path model, String name) {
        try (Checkpoint c = Checkpoint.open(hadoop(model), CONF)) {
            return c.readFloat(name);
        }
    }

    /** --dtype bf16 and --max-shard-size: every tensor in bf16, shards with an index, the values rounded once. */
    @Test
    void theOutputCheckpointTakesDtypeAndShardSize() throws Exception {
        Path out = surgery("topk-2-bf16", "topk", "--top-k", "2", "--dtype", "bf16", "--max-shard-size", "2MB");
        assertTrue(Files.exists(out.resolve("model.safetensors.index.json")), "no shard index");
        try (java.util.stream.Stream<Path> files = Files.list(out)) {
            assertTrue(files.filter(f -> f.getFileName().toString().matches("model-\\d{5}-of-\\d{5}\\.safetensors"))
                    .count() > 1, "expected several shards of at most 2 MB for a 14 MB float32 model");
        }
        CheckpointLayout layout = new CheckpointLayout(ModelFolder.readConfig(hadoop(out), CONF).modelType);
        String down = layout.expert(1, 3, Projection.DOWN);
        try (Checkpoint written = Checkpoint.open(hadoop(out), CONF)) {
            for (String name : written.names()) {
                assertEquals(DType.BF16, written.dtype(name), name);
            }
            INDArray original = tensor(Fixtures.tinyModel(), down);
            INDArray rounded = original.castTo(org.nd4j.linalg.api.buffer.DataType.BFLOAT16)
                    .castTo(org.nd4j.linalg.api.buffer.DataType.FLOAT);
            assertEquals(rounded, written.readFloat(down), "topk to the same K keeps the weights, rounded to bf16");
        }
        assertTrue(Double.isFinite(ppl(out)));
    }

    @Test
    void topkMeasuredScalesTheDownProjectionsAndEvalRunsOnIt() throws Exception {
        Path out = surgery("topk-1-measured", "topk", "--top-k", "1", "--rescale", "measured");
        ModelConfig config = ModelFolder.readConfig(hadoop(out), CONF);
        assertEquals(1, config.num_experts_per_tok);
        MoeTransformer model = ModelFolder.load(hadoop(out), CONF);
        assertEquals(E, model.config().num_experts);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        double alpha = Math.sqrt(0.60 / 1.00); // √(E[Σ top-2 ĝ²] / E[Σ top-1 ĝ²])
        for (int l = 0; l < LAYERS; l++) {
            INDArray original = tensor(Fixtures.tinyModel(), layout.expert(l, 5, Projection.DOWN));
            INDArray scaled = tensor(out, layout.expert(l, 5, Projection.DOWN));
            assertTrue(original.mul(alpha).sub(scaled).amaxNumber().doubleValue() <= 1e-6, "layer " + l);
            assertEquals(tensor(Fixtures.tinyModel(), layout.expert(l, 5, Projection.GATE)),
                    tensor(out, layout.expert(l, 5, Projection.GATE)));
        }
        JsonNode report = JSON.readTree(out.resolve("surgery.json").toFile());
        assertEquals(alpha, report.get("layers").get(2).get("alpha").asDouble(), 1e-12);
        assertTrue(Files.exists(out.resolve("tokenizer.json")));
        ppl(out);
    }

    @Test
    void mergeDenseWritesAMistralThatEvalAndLogitsRun() throws Exception {
        Path out = surgery("dense-router-top2", "merge-dense", "--method", "router-weighted", "--top-k-mask", "2",
                "--temperature", "100");
        ModelConfig config = ModelFolder.readConfig(hadoop(out), CONF);
        assertEquals(ModelConfig.ModelType.MISTRAL, config.modelType);
        assertEquals(0, config.num_experts);
        try (Checkpoint c = Checkpoint.open(hadoop(out), CONF)) {
            ModelSchema.check(config, c);
            assertEquals(ModelSchema.expected(config).keySet(), c.names());
        }
        // layer 1: mean logits (e + 1) mod 3 → experts 1, 4, 7 have the largest (2); softmax(·/100) then the mask
        // keeps the first two of them, 1 and 4, with equal weights.
        CheckpointLayout layout = new CheckpointLayout(ModelConfig.ModelType.MIXTRAL);
        INDArray expected = tensor(Fixtures.tinyModel(), layout.expert(1, 1, Projection.UP))
                .add(tensor(Fixtures.tinyModel(), layout.expert(1, 4, Projection.UP))).muli(0.5);
        INDArray merged = tensor(out, CheckpointLayout.denseMlp(1, Projection.UP));
        assertTrue(expected.sub(merged).amaxNumber().doubleValue() <= 1e-6);
        ppl(out);
        Path logits = tmp.resolve("dense-logits.safetensors");
        StringWriter err = new StringWriter();
        assertEquals(0, sparkmoe(err, "logits", "--model", out.toString(), "--input-ids", Fixtures.reference().toString(),
                "--out", logits.toString()), err.toString());
        try (SafeTensorsFile f = SafeTensorsFile.open(logits); SafeTensorsFile ref = SafeTensorsFile.open(Fixtures.reference())) {
            assertArrayEquals(ref.readFloat("logits").shape(), f.readFloat("logits").shape());
            assertFalse(f.names().contains("router_logits.0"));
        }
    }

    /** Files a and b select disjoint halves, so routing profiles cluster 8 → 2 into {0..3} and {4..7}. */
    @Test
    void reduceWritesTheSmallerModelAndItsExpertMapIdenticallyForAnyPartitioning() throws Exception {
        Path one = surgery("reduce-2-p1", flatStats, "reduce", "--experts", "2", "--partitions", "1");
        Path four = surgery("reduce-2-p4", flatStats, "reduce", "--experts", "2", "--partitions", "4");
        assertArrayEquals(Files.readAllBytes(one.resolve("model.safetensors")),
                Files.readAllBytes(four.resolve("model.safetensors")));
        try (java.util.stream.Stream<Path> siblings = Files.list(one.getParent())) {
            List<Path> staged = siblings.filter(p -> p.getFileName().toString().contains(".pieces-")).toList();
            assertTrue(staged.isEmpty(), "the tasks' staged tensors are removed: " + staged);
        }
        ModelConfig config = ModelFolder.readConfig(hadoop(one), CONF);
        assertEquals(2, config.num_experts);
        assertEquals(2, config.num_experts_per_tok);
        ExpertMap map = ExpertMap.parse(Files.readString(one.resolve("expert-map.json")), "map", new int[] {E, E, E, E});
        for (int l = 0; l < LAYERS; l++) {
            assertArrayEquals(new int[][] {{0, 1, 2, 3}, {4, 5, 6, 7}}, map.all().get(l));
        }
        // group 0 of layer 3 = (30·W0 + 20·W1 + 40·W2 + 10·W3) / 100
        CheckpointLayout layout = new CheckpointLayout(ModelConfig.ModelType.MIXTRAL);
        double[] w = {0.3, 0.2, 0.4, 0.1};
        INDArray expected = null;
        for (int e = 0; e < 4; e++) {
            INDArray t = tensor(Fixtures.tinyModel(), layout.expert(3, e, Projection.DOWN)).muli(w[e]);
            expected = expected == null ? t : expected.addi(t);
        }
        assertTrue(expected.sub(tensor(one, layout.expert(3, 0, Projection.DOWN))).amaxNumber().doubleValue() <= 1e-6);
        assertArrayEquals(new long[] {2, 128}, tensor(one, layout.routerGate(3)).shape());
        ppl(one);
    }

    @Test
    void lowrankWritesLowRankExpertsThatEvalRunsAndReportsErrors() throws Exception {
        Path out = surgery("lowrank-8", "lowrank", "--rank", "8", "--base", "router-weighted");
        ModelConfig config = ModelFolder.readConfig(hadoop(out), CONF);
        assertEquals(8, config.low_rank_experts_rank);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        try (Checkpoint c = Checkpoint.open(hadoop(out), CONF)) {
            assertEquals(ModelSchema.expected(config).keySet(), c.names());
            assertArrayEquals(new long[] {E, 8, 256}, c.shape(layout.stackedLoraA(2, Projection.DOWN)));
        }
        MoeTransformer model = ModelFolder.load(hadoop(out), CONF);
        assertEquals(E, model.config().num_experts);
        JsonNode layer = JSON.readTree(out.resolve("surgery.json").toFile()).get("layers").get(0);
        double error = layer.get("w1_rel_error").asDouble();
        assertTrue(error > 0 && error < 1, "w1 error " + error);
        assertEquals(E * 256.0 * 128, layer.get("w2_params_before").asDouble());
        assertEquals(256.0 * 128 + E * 8.0 * (128 + 256), layer.get("w2_params_after").asDouble());
        // one Spark task per (layer, projection): any partitioning writes the same bits
        Path one = surgery("lowrank-8-p1", "lowrank", "--rank", "8", "--base", "router-weighted", "--partitions", "1");
        assertArrayEquals(Files.readAllBytes(one.resolve("model.safetensors")),
                Files.readAllBytes(out.resolve("model.safetensors")));
        ppl(out);
        assertFails(1, "topk: error: file:" + out + " holds a shared base and rank-8 experts (surgery lowrank); surgery "
                + "works on full experts", "surgery", "topk", "--model", out.toString(), "--top-k", "1", "--out",
                tmp.resolve("never-topk").toString());
    }

    /** --router puts retrained [E', D] gates (what retrain-router --expert-map writes) into the reduced checkpoint. */
    @Test
    void reduceTakesRetrainedGates() throws Exception {
        CheckpointLayout layout = new CheckpointLayout(ModelConfig.ModelType.MIXTRAL);
        java.util.LinkedHashMap<String, INDArray> gates = new java.util.LinkedHashMap<>();
        for (int l = 0; l < LAYERS; l++) {
            gates.put(layout.routerGate(l), org.nd4j.linalg.factory.Nd4j.rand(org.nd4j.linalg.api.buffer.DataType.FLOAT,
                    3, 128));
        }
        Path router = tmp.resolve("router.safetensors");
        org.sparkmoe.io.SafeTensorsWriter.write(org.apache.hadoop.fs.FileSystem.getLocal(CONF), hadoop(router), gates,
                java.util.Map.of("format", "pt"));
        Path out = surgery("reduce-3-router", flatStats, "reduce", "--experts", "3", "--router", router.toString());
        assertEquals(gates.get(layout.routerGate(2)), tensor(out, layout.routerGate(2)));
        assertFails(1, "reduce: error: file:" + router + ": " + layout.routerGate(0) + " is [3, 128], expected [4, 128]",
                "surgery", "reduce", "--model", Fixtures.tinyModel().toString(), "--experts", "4", "--by", "weights",
                "--router", router.toString(), "--out", tmp.resolve("never-router").toString());
    }

    private static void assertFails(int code, String expectedStart, String... args) {
        StringWriter err = new StringWriter();
        assertEquals(code, sparkmoe(err, args), err.toString());
        String text = err.toString();
        assertTrue(text.startsWith(expectedStart), text);
        if (code == 1) {
            assertEquals(1, text.strip().lines().count(), "one line: " + text);
        }
    }

    @Test
    void badInputFailsWithOneLineAndWritesNothing() throws Exception {
        String model = Fixtures.tinyModel().toString();
        String out = tmp.resolve("never").toString();
        assertFails(1, "topk: error: --rescale measured needs --stats", "surgery", "topk", "--model", model, "--top-k",
                "1", "--rescale", "measured", "--out", out);
        assertFails(1, "topk: error: router statistics not found: ", "surgery", "topk", "--model", model, "--top-k", "1",
                "--rescale", "measured", "--stats", tmp.resolve("missing.json").toString(), "--out", out);
        assertFails(1, "topk: error: --top-k must be in [1, 8] (the model's experts), got 9", "surgery", "topk",
                "--model", model, "--top-k", "9", "--out", out);
        assertFails(1, "reduce: error: --experts must be in [1, 7] (fewer than the model's 8), got 8", "surgery",
                "reduce", "--model", model, "--experts", "8", "--by", "weights", "--out", out);
        assertFails(1, "merge-dense: error: --method router-weighted needs --stats", "surgery", "merge-dense", "--model",
                model, "--method", "router-weighted", "--out", out);
        assertFails(1, "merge-dense: error: --top-k-mask must be in [1, 8], got 0", "surgery", "merge-dense", "--model",
                model, "--method", "uniform", "--top-k-mask", "0", "--out", out);
        assertFails(2, "topk: Invalid value for option '--rescale': 'zipf'", "surgery", "topk", "--model", model,
                "--top-k", "1", "--rescale", "zipf", "--out", out);
        Path bad = tmp.resolve("bad-stats.json");
        Files.writeString(bad, Files.readString(stats).replace("\"experts\":8", "\"experts\":6"));
        assertFails(1, "topk: error: file:" + bad + ": describes 6 experts, the model has 8", "surgery", "topk", "--model",
                model, "--top-k", "1", "--rescale", "measured", "--stats", bad.toString(), "--out", out);
        assertFails(1, "lowrank: error: --rank must be in [1, 128] (min of hidden_size 128 and intermediate_size 256), got 129",
                "surgery", "lowrank", "--model", model, "--rank", "129", "--out", out);
        assertFails(1, "topk: error: output checkpoint folder already exists: ", "surgery", "topk", "--model", model,
                "--top-k", "1", "--out", tmp.toString());
        assertFalse(Files.exists(tmp.resolve("never")));
        try (var files = Files.list(tmp)) {
            assertTrue(files.noneMatch(p -> p.getFileName().toString().startsWith(".never")), "no staging folder left");
        }
    }
}
