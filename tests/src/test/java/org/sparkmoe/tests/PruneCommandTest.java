package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparkmoe.calib.ExpertMap;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;
import static org.sparkmoe.tests.FixtureCommands.hadoop;
import static org.sparkmoe.tests.FixtureCommands.ok;
import static org.sparkmoe.tests.FixtureCommands.tensor;

/**
 * calibrate's expert-scores.json and {@code surgery prune} on the tiny Mixtral: the file holds exactly the documented
 * fields, --min-expert-tokens with --strict fails after writing; prune 8 → 6 by each method keeps the six best experts
 * bit for bit, their gate rows, and writes an expert map; eval runs on the result; bad input fails with one line.
 */
class PruneCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int E = 8;
    private static final int LAYERS = 4;
    private static final CheckpointLayout LAYOUT = new CheckpointLayout(ModelConfig.ModelType.MIXTRAL);

    @TempDir
    static Path tmp;
    private static Path calib;
    private static JsonNode scores;
    private static CliRun strict;

    /** One calibration with a floor no expert reaches: --strict fails, the outputs are written all the same. */
    @BeforeAll
    static void calibrate() throws Exception {
        calib = tmp.resolve("calib");
        strict = sparkmoe("calibrate", "--model", Fixtures.tinyModel().toString(), "--data",
                Fixtures.sysadminExcerpt(tmp).toString(), "--window", "64", "--master", "local[2]",
                "--min-expert-tokens", "1000000000", "--strict", "--out", calib.toString());
        scores = JSON.readTree(calib.resolve("expert-scores.json").toFile());
    }

    @Test
    void strictFailsWithOneLineAfterWritingTheOutputs() {
        assertEquals(1, strict.exitCode(), strict.err());
        assertEquals(1, strict.err().strip().lines().count(), strict.err());
        assertTrue(strict.err().startsWith("calibrate: error: --strict: 32 experts routed fewer than "
                + "--min-expert-tokens 1000000000 tokens: layer 0 expert 0 ("), strict.err());
        assertTrue(Files.exists(calib.resolve("router-stats.json")));
        assertEquals(32, scores.get("rare_experts").size());
    }

    @Test
    void expertScoresHoldExactlyTheDocumentedFields() throws Exception {
        assertEquals(Set.of("model_type", "tokens", "min_expert_tokens", "layers", "rare_experts"), keys(scores));
        assertEquals("mixtral", scores.get("model_type").asText());
        long tokens = scores.get("tokens").asLong();
        JsonNode router = JSON.readTree(calib.resolve("router-stats.json").toFile());
        assertEquals(router.get("tokens").asLong(), tokens);
        assertEquals(LAYERS, scores.get("layers").size());
        for (int l = 0; l < LAYERS; l++) {
            JsonNode layer = scores.get("layers").get(l);
            assertEquals(Set.of("layer", "experts", "top_k", "routed_tokens", "frequency", "reap", "ean"), keys(layer));
            assertEquals(l, layer.get("layer").asInt());
            assertEquals(E, layer.get("experts").asInt());
            assertEquals(2, layer.get("top_k").asInt());
            long routed = 0;
            for (int e = 0; e < E; e++) {
                long n = layer.get("routed_tokens").get(e).asLong();
                assertEquals(router.get("layers").get(l).get("count").get(e).asLong(), n, "routed = selected");
                assertEquals((double) n / tokens, layer.get("frequency").get(e).asDouble(), 0.0);
                assertTrue(layer.get("reap").get(e).isDouble() && layer.get("ean").get(e).isDouble());
                assertEquals(n > 0, layer.get("reap").get(e).asDouble() > 0, "REAP > 0 exactly for a routed expert");
                assertEquals(n > 0, layer.get("ean").get(e).asDouble() > 0, "EAN > 0 exactly for a routed expert");
                routed += n;
            }
            assertEquals(2 * tokens, routed);
        }
        JsonNode first = scores.get("rare_experts").get(0);
        assertEquals(Set.of("layer", "expert", "routed_tokens"), keys(first));
        assertEquals(scores.get("layers").get(0).get("routed_tokens").get(0).asLong(), first.get("routed_tokens").asLong());
    }

    private static Set<String> keys(JsonNode node) {
        Set<String> out = new TreeSet<>();
        for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
            out.add(it.next());
        }
        return out;
    }

    /** The six highest scores of a layer by {@code field} (ties to the lower index), ascending. */
    private static int[] best(int l, String field, int keep) {
        JsonNode s = scores.get("layers").get(l).get(field);
        return IntStream.range(0, E).boxed()
                .sorted((a, b) -> s.get(a).asDouble() != s.get(b).asDouble()
                        ? Double.compare(s.get(b).asDouble(), s.get(a).asDouble()) : Integer.compare(a, b))
                .limit(keep).mapToInt(Integer::intValue).sorted().toArray();
    }

    @ParameterizedTest
    @ValueSource(strings = {"reap", "frequency", "ean"})
    void pruneKeepsTheBestExpertsBitForBitAndEvalRuns(String method) throws Exception {
        String field = method.equals("frequency") ? "routed_tokens" : method;
        Path out = tmp.resolve("prune-" + method);
        ok("surgery", "prune", "--model", Fixtures.tinyModel().toString(), "--stats",
                calib.resolve("expert-scores.json").toString(), "--experts", "6", "--method", method, "--out",
                out.toString(), "--master", "local[2]");
        ModelConfig config = ModelFolder.readConfig(hadoop(out), new Configuration());
        assertEquals(6, config.num_experts);
        assertEquals(2, config.num_experts_per_tok);
        ExpertMap map = ExpertMap.parse(Files.readString(out.resolve("expert-map.json")), "map", new int[] {E, E, E, E});
        for (int l = 0; l < LAYERS; l++) {
            int[] kept = best(l, field, 6);
            assertArrayEquals(new long[] {6, 128}, tensor(out, LAYOUT.routerGate(l)).shape());
            for (int g = 0; g < 6; g++) {
                assertEquals(kept[g], map.members(l, g)[0], "layer " + l + ": group " + g + " starts with its kept expert");
                assertArrayEquals(bits(Fixtures.tinyModel(), LAYOUT.routerGate(l), kept[g]),
                        bits(out, LAYOUT.routerGate(l), g), "gate row");
                for (Projection p : Projection.values()) {
                    assertArrayEquals(bits(Fixtures.tinyModel(), LAYOUT.expert(l, kept[g], p), -1),
                            bits(out, LAYOUT.expert(l, g, p), -1), "layer " + l + " expert " + kept[g] + " " + p);
                }
            }
        }
        assertEquals(4, JSON.readTree(out.resolve("surgery.json").toFile()).get("layers").size());
        double ppl = FixtureCommands.ppl(out, tmp);
        assertTrue(ppl > 1 && Double.isFinite(ppl));
    }

    /**
     * Synthetic expert-scores.json for a fixture: in MoE layer l expert e scores (5·e + l) mod E by every method
     * (distinct, as 5 is prime to E = 6 and 8).
     */
    private static Path syntheticScores(Path model, ModelConfig config, int[] moeLayers) throws Exception {
        StringBuilder s = new StringBuilder("{\"model_type\":\"" + config.modelType.name().toLowerCase()
                + "\",\"tokens\":100,\"min_expert_tokens\":0,\"rare_experts\":[],\"layers\":[");
        for (int i = 0; i < moeLayers.length; i++) {
            double[] score = new double[config.num_experts];
            long[] routed = new long[config.num_experts];
            for (int e = 0; e < score.length; e++) {
                score[e] = (5 * e + i) % config.num_experts;
                routed[e] = (long) score[e];
            }
            s.append(i > 0 ? "," : "").append("{\"layer\":").append(moeLayers[i]).append(",\"experts\":")
                    .append(config.num_experts).append(",\"top_k\":").append(config.num_experts_per_tok)
                    .append(",\"routed_tokens\":").append(Arrays.toString(routed))
                    .append(",\"frequency\":").append(Arrays.toString(score)).append(",\"reap\":")
                    .append(Arrays.toString(score)).append(",\"ean\":").append(Arrays.toString(score)).append("}");
        }
        Path file = tmp.resolve(model.getFileName() + "-scores.json");
        Files.writeString(file, s.append("]}").toString());
        return file;
    }

    /**
     * gpt-oss (router and expert biases, fused experts), GLM-4.5 (groups, correction bias, shared expert), DeepSeek-V2
     * (greedy groups, two shared experts) and Qwen2-MoE (gated shared expert): the kept experts, their gate rows and
     * bias entries are the originals', every other tensor (attention, norms, shared experts) is unchanged, and eval
     * runs (Qwen2-MoE's fixture has no tokenizer.json, so not there).
     */
    @ParameterizedTest
    @ValueSource(strings = {"gpt-oss-tiny:6", "glm4-moe-tiny:4", "deepseek-v2-tiny:4", "qwen2-moe-tiny:4"})
    void pruneKeepsBiasesGroupsAndSharedExpertsOfEveryFamily(String spec) throws Exception {
        Path model = FixtureCommands.model(spec.split(":")[0]);
        int keep = Integer.parseInt(spec.split(":")[1]);
        ModelConfig config = ModelFolder.readConfig(hadoop(model), new Configuration());
        int[] moeLayers = org.sparkmoe.calib.CalibrationStats.moeLayerIndices(config);
        Path out = tmp.resolve("prune-" + model.getFileName());
        ok("surgery", "prune", "--model", model.toString(), "--stats", syntheticScores(model, config, moeLayers).toString(),
                "--experts", String.valueOf(keep), "--out", out.toString(), "--master", "local[2]");
        ModelConfig pruned = ModelFolder.readConfig(hadoop(out), new Configuration());
        assertEquals(keep, pruned.num_experts);
        int groups = config.routing.groupLimited() ? config.routing.n_group() : 1;
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        Set<String> checked = new TreeSet<>();
        for (int i = 0; i < moeLayers.length; i++) {
            int l = moeLayers[i];
            int[] kept = expectedKept(i, config.num_experts, groups, keep);
            for (int g = 0; g < keep; g++) {
                assertArrayEquals(bits(model, layout.routerGate(l), kept[g]), bits(out, layout.routerGate(l), g));
                for (Projection p : Projection.values()) {
                    assertArrayEquals(bits(model, layout.expert(l, kept[g], p), -1), bits(out, layout.expert(l, g, p), -1));
                    if (config.clamped_experts) {
                        assertArrayEquals(bits(model, layout.expertBias(l, kept[g], p), -1),
                                bits(out, layout.expertBias(l, g, p), -1));
                    }
                }
                if (config.clamped_experts) {
                    assertEquals(tensor(model, layout.routerBias(l)).getFloat(kept[g]),
                            tensor(out, layout.routerBias(l)).getFloat(g), 0f);
                }
                if (config.routing.scoreCorrectionBias()) {
                    assertEquals(tensor(model, layout.scoreCorrectionBias(l)).getFloat(kept[g]),
                            tensor(out, layout.scoreCorrectionBias(l)).getFloat(g), 0f);
                }
            }
            checked.add(layout.routerGate(l));
            checked.add(layout.routerBias(l));
            checked.add(layout.scoreCorrectionBias(l));
        }
        Configuration conf = new Configuration();
        try (org.sparkmoe.io.Checkpoint c = org.sparkmoe.io.Checkpoint.open(hadoop(out), conf)) {
            org.sparkmoe.io.TensorSource tensors = org.sparkmoe.io.FusedExperts.perExpert(c, pruned);
            for (String name : org.sparkmoe.model.ModelSchema.expected(pruned).keySet()) {
                if (!checked.contains(name) && !name.contains(".experts.") && tensors.has(name)) {
                    assertArrayEquals(bits(model, name, -1), bits(out, name, -1), name);
                }
            }
        }
        if (Files.exists(model.resolve("tokenizer.json"))) { // qwen2-moe-tiny has none: eval cannot read text
            FixtureCommands.ppl(out, tmp);
        }
    }

    /** The {@code keep / groups} highest synthetic scores of every contiguous expert group, ascending. */
    private static int[] expectedKept(int moeLayer, int experts, int groups, int keep) {
        int size = experts / groups;
        List<Integer> out = new ArrayList<>();
        for (int j = 0; j < groups; j++) {
            IntStream.range(j * size, (j + 1) * size).boxed()
                    .sorted((a, b) -> Integer.compare((5 * b + moeLayer) % experts, (5 * a + moeLayer) % experts))
                    .limit(keep / groups).forEach(out::add);
        }
        return out.stream().mapToInt(Integer::intValue).sorted().toArray();
    }

    /** The raw float32 bits of a tensor (the fixture is F32, so these are its stored bytes), or of one row. */
    private static int[] bits(Path model, String name, int row) {
        org.nd4j.linalg.api.ndarray.INDArray t = tensor(model, name);
        float[] v = (row < 0 ? t : t.getRow(row)).dup('c').data().asFloat();
        int[] out = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = Float.floatToRawIntBits(v[i]);
        }
        return out;
    }

    @Test
    void badInputFailsWithOneLineBeforeSparkAndWritesNothing() throws Exception {
        String model = Fixtures.tinyModel().toString();
        String stats = calib.resolve("expert-scores.json").toString();
        Path never = tmp.resolve("never");
        Path otherModel = tmp.resolve("qwen-scores.json");
        Files.writeString(otherModel, Files.readString(Path.of(stats)).replace("\"mixtral\"", "\"qwen2_moe\""));
        Path deepseek = FixtureCommands.model("deepseek-v3-tiny");
        ModelConfig v3 = ModelFolder.readConfig(hadoop(deepseek), new Configuration());
        Path v3Scores = syntheticScores(deepseek, v3, org.sparkmoe.calib.CalibrationStats.moeLayerIndices(v3));
        List<String[]> cases = new ArrayList<>();
        cases.add(new String[] {"prune: error: --experts 6 does not keep the expert groups: it must be a multiple of "
                + "n_group 4 with at least 2 experts per group", "--model", deepseek.toString(), "--stats",
                v3Scores.toString(), "--experts", "6"});
        cases.add(new String[] {"prune: error: --experts must be in [2, 7] (at least num_experts_per_tok 2, fewer than "
                + "the model's 8), got 8", "--stats", stats, "--experts", "8"});
        cases.add(new String[] {"prune: error: --experts must be in [2, 7]", "--stats", stats, "--experts", "1"});
        cases.add(new String[] {"prune: error: --method must be one of reap, frequency, ean, got zipf", "--stats", stats,
                "--experts", "6", "--method", "zipf"});
        cases.add(new String[] {"prune: error: file:" + otherModel + ": scores of a qwen2_moe model, --model is mixtral",
                "--stats", otherModel.toString(), "--experts", "6"});
        cases.add(new String[] {"prune: error: file:" + calib.resolve("router-stats.json") + ": expected "
                + "expert-scores.json from 'sparkmoe calibrate'", "--stats", calib.resolve("router-stats.json").toString(),
                "--experts", "6"});
        cases.add(new String[] {"prune: error: surgery prune needs --stats (expert-scores.json from 'sparkmoe "
                + "calibrate')", "--experts", "6"});
        for (String[] c : cases) {
            List<String> args = new ArrayList<>(List.of("surgery", "prune", "--out", never.toString()));
            args.addAll(Arrays.asList(c).subList(1, c.length));
            if (!args.contains("--model")) {
                args.addAll(List.of("--model", model));
            }
            CliRun run = sparkmoe(args);
            assertEquals(1, run.exitCode(), run.err());
            assertEquals(1, run.err().strip().lines().count(), "one line: " + run.err());
            assertTrue(run.err().startsWith(c[0]), run.err());
            assertFalse(Files.exists(never));
        }
    }
}
