package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.ExpertMap;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.surgery.ExpertPruneSurgery;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
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
 * {@code surgery prune --global} on the tiny gpt-oss, GLM-4.5 and DeepSeek-V3 fixtures from synthetic scores: the first
 * MoE layer's scores sit on its K best experts, the others' rise with the index (expert e scores e + 1), so the first
 * layer keeps K (the floor) and the others share the rest. The checkpoint holds E_max per layer, the masked experts'
 * gate rows are zero and their selection bias {@link ExpertPruneSurgery#MASKED}; it loads and evals, and calibrate on
 * it routes no token to a masked expert. Families without a selection bias and bad flags are refused in one line.
 */
class GlobalPruneCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path tmp;

    /**
     * fixture : E' : E_max : first MoE layer's masked experts : the last's kept experts. gpt-oss (top-3, 3 MoE layers,
     * budget 15): layer 0 keeps 3, layers 1 and 2 keep experts 2..7 (6 = E_max), so layer 0 holds 0..5 and masks 3..5.
     * GLM-4.5 (top-2, groups of 4, one chosen; budget 8): layer 1 keeps 0, 1, layer 2 keeps 2..7 (4 in group 1), so
     * every group holds 4 = all 8. DeepSeek-V3 (top-2, groups of 2, two chosen): likewise all 8, layer 2's group 0 masked.
     * "golden": our loader's logits on the written checkpoint equal transformers' on the same checkpoint
     * ({@code global-prune-NAME-reference.safetensors}, made by check_global_prune.py from the same scores), the
     * masked router bias included.
     */
    @ParameterizedTest
    @ValueSource(strings = {"gpt-oss-tiny:5:6:3,4,5:2,3,4,5,6,7:golden", "glm4-moe-tiny:4:8:2,3,4,5,6,7:2,3,4,5,6,7:-",
            "deepseek-v3-tiny:4:8:2,3,4,5,6,7:2,3,4,5,6,7:golden"})
    void maskedExpertsAreHeldNeverSelectedAndTheModelEvals(String spec) throws Exception {
        String[] f = spec.split(":");
        Path model = FixtureCommands.model(f[0]);
        int budget = Integer.parseInt(f[1]);
        int held = Integer.parseInt(f[2]);
        int[] firstMasked = ints(f[3]);
        int[] lastKept = ints(f[4]);
        Configuration conf = new Configuration();
        ModelConfig config = ModelFolder.readConfig(hadoop(model), conf);
        int[] moeLayers = CalibrationStats.moeLayerIndices(config);
        int k = config.num_experts_per_tok;
        Path out = tmp.resolve("global-" + f[0]);
        ok("surgery", "prune", "--global", "--model", model.toString(), "--stats", scores(model, config, moeLayers)
                .toString(), "--experts", f[1], "--out", out.toString(), "--master", "local[2]");

        ModelConfig pruned = ModelFolder.readConfig(hadoop(out), conf);
        assertEquals(held, pruned.num_experts);
        JsonNode report = JSON.readTree(out.resolve("surgery.json").toFile());
        assertTrue(report.get("settings").get("global").asBoolean());
        assertEquals(k, report.get("settings").get("min_experts_per_layer").asInt());
        int last = moeLayers.length - 1;
        assertArrayEquals(IntStream.range(0, k).toArray(), ints(report.get("layers").get(0).get("kept")));
        assertArrayEquals(firstMasked, ints(report.get("layers").get(0).get("masked")));
        assertArrayEquals(lastKept, ints(report.get("layers").get(last).get("kept")));
        int keptInAll = 0;
        for (JsonNode layer : report.get("layers")) {
            keptInAll += layer.get("kept").size();
            assertEquals(held, layer.get("kept").size() + layer.get("masked").size());
        }
        assertEquals(budget * moeLayers.length, keptInAll);
        int[] experts = new int[moeLayers.length];
        Arrays.fill(experts, config.num_experts);
        ExpertMap map = ExpertMap.parse(Files.readString(out.resolve("expert-map.json")), "map", experts);

        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        List<int[]> maskedNew = new ArrayList<>();
        for (int i = 0; i < moeLayers.length; i++) {
            int l = moeLayers[i];
            int moe = i;
            int[] masked = ints(report.get("layers").get(i).get("masked"));
            int[] newIndices = IntStream.range(0, held).filter(g -> contains(masked, map.members(moe, g)[0])).toArray();
            assertArrayEquals(newIndices, map.masked(i), "expert-map masked, layer " + l);
            maskedNew.add(newIndices);
            for (int g = 0; g < held; g++) {
                int original = map.members(i, g)[0];
                boolean isMasked = contains(newIndices, g);
                float bias = config.clamped_experts ? tensor(out, layout.routerBias(l)).getFloat(g)
                        : tensor(out, layout.scoreCorrectionBias(l)).getFloat(g);
                float source = config.clamped_experts ? tensor(model, layout.routerBias(l)).getFloat(original)
                        : tensor(model, layout.scoreCorrectionBias(l)).getFloat(original);
                assertEquals(isMasked ? ExpertPruneSurgery.MASKED : source, bias, 0f, "layer " + l + " expert " + g);
                double gateRow = tensor(out, layout.routerGate(l)).getRow(g).norm1Number().doubleValue();
                assertEquals(isMasked, gateRow == 0, "layer " + l + " expert " + g + " gate row norm " + gateRow);
                assertArrayEquals(tensor(model, layout.expert(l, original, Projection.DOWN)).data().asFloat(),
                        tensor(out, layout.expert(l, g, Projection.DOWN)).data().asFloat());
            }
        }

        if (f[5].equals("golden")) {
            MoeTransformer ours = ReferenceParity.load(out);
            try (SafeTensorsFile ref = ReferenceParity.reference("global-prune-" + f[0])) {
                ForwardOutput forward = ours.forward(ReferenceParity.tokens(ref.readLongs("input_ids")), k, true);
                ReferenceParity.assertClose(f[0] + " --global logits", ref.readFloat("logits")
                        .reshape(ReferenceParity.BATCH * ReferenceParity.SEQ, pruned.vocab_size), forward.logits());
            }
        }
        FixtureCommands.ppl(out, tmp);
        JsonNode stats = FixtureCommands.calibrate(out, pruned, Files.createDirectories(tmp.resolve("cal-" + f[0])));
        long tokens = stats.get("tokens").asLong();
        for (int i = 0; i < moeLayers.length; i++) {
            JsonNode count = stats.get("layers").get(i).get("count");
            long routed = 0;
            for (int g = 0; g < held; g++) {
                if (contains(maskedNew.get(i), g)) {
                    assertEquals(0, count.get(g).asLong(), "layer " + moeLayers[i] + ": masked expert " + g + " routed");
                }
                routed += count.get(g).asLong();
            }
            assertEquals(k * tokens, routed);
        }
    }

    @Test
    void refusalsAreOneLineBeforeSparkAndWriteNothing() throws Exception {
        Path mixtral = Fixtures.tinyModel();
        ModelConfig mixtralConfig = ModelFolder.readConfig(hadoop(mixtral), new Configuration());
        Path mixtralScores = scores(mixtral, mixtralConfig, CalibrationStats.moeLayerIndices(mixtralConfig));
        Path gptOss = FixtureCommands.model("gpt-oss-tiny");
        ModelConfig gptOssConfig = ModelFolder.readConfig(hadoop(gptOss), new Configuration());
        Path gptOssScores = scores(gptOss, gptOssConfig, CalibrationStats.moeLayerIndices(gptOssConfig));
        Path never = tmp.resolve("never");
        List<String[]> cases = new ArrayList<>();
        cases.add(new String[] {"prune: error: --global needs a per-expert selection bias in the checkpoint to mask "
                + "experts (gpt_oss's router bias, or e_score_correction_bias of glm4_moe, deepseek_v3, kimi_k2): a "
                + "mixtral config.json holds one expert count for every layer and its router has none, so its layers "
                + "cannot keep different numbers of experts; prune per layer (without --global)", "--model",
                mixtral.toString(), "--stats", mixtralScores.toString(), "--experts", "6", "--global"});
        cases.add(new String[] {"prune: error: --min-experts-per-layer must be in [3, 5] (at least "
                + "num_experts_per_tok 3: a layer needs 3 selectable experts; at most --experts 5, or F·L exceeds the "
                + "budget of L·E' experts), got 6", "--model", gptOss.toString(), "--stats", gptOssScores.toString(),
                "--experts", "5", "--global", "--min-experts-per-layer", "6"});
        cases.add(new String[] {"prune: error: --min-experts-per-layer needs --global", "--model", gptOss.toString(),
                "--stats", gptOssScores.toString(), "--experts", "5", "--min-experts-per-layer", "3"});
        cases.add(new String[] {"prune: error: --router does not combine with --global", "--model", gptOss.toString(),
                "--stats", gptOssScores.toString(), "--experts", "5", "--global", "--router", "r.safetensors"});
        for (String[] c : cases) {
            List<String> args = new ArrayList<>(List.of("surgery", "prune", "--out", never.toString()));
            args.addAll(Arrays.asList(c).subList(1, c.length));
            CliRun run = sparkmoe(args);
            assertEquals(1, run.exitCode(), run.err());
            assertEquals(1, run.err().strip().lines().count(), "one line: " + run.err());
            assertTrue(run.err().startsWith(c[0]), run.err());
            assertFalse(Files.exists(never));
        }
    }

    /** retrain-router refuses the expert map of a --global prune (its masked experts) in one line. */
    @Test
    void retrainRouterRefusesAMapWithMaskedExperts() throws Exception {
        Path model = FixtureCommands.model("gpt-oss-tiny");
        ModelConfig config = ModelFolder.readConfig(hadoop(model), new Configuration());
        Path calib = tmp.resolve("rd-calib");
        ok("calibrate", "--model", model.toString(), "--data", Fixtures.sysadminExcerpt(tmp).toString(), "--window",
                "64", "--master", "local[2]", "--export-router-data", "--out", calib.toString());
        Path pruned = tmp.resolve("rd-pruned");
        ok("surgery", "prune", "--global", "--model", model.toString(), "--stats",
                scores(model, config, CalibrationStats.moeLayerIndices(config)).toString(), "--experts", "5", "--out",
                pruned.toString(), "--master", "local[2]");
        Path never = tmp.resolve("rd-never");
        CliRun run = sparkmoe("retrain-router", "--model", model.toString(), "--router-data",
                calib.resolve("router-data").toString(), "--expert-map", pruned.resolve("expert-map.json").toString(),
                "--out", never.toString());
        assertEquals(1, run.exitCode(), run.err());
        assertEquals(1, run.err().strip().lines().count(), "one line: " + run.err());
        assertTrue(run.err().contains("expert-map.json: layers[0] masks new experts [3, 4, 5] (surgery prune "
                + "--global): a retrained router would choose them; retrain after a per-layer prune (without "
                + "--global)"), run.err());
        assertFalse(Files.exists(never));
    }

    /**
     * Synthetic expert-scores.json (the same scores by every method): in the first MoE layer its K first experts score
     * 100, 90, 80, … and the others 1; in every later layer expert e scores e + 1.
     */
    private static Path scores(Path model, ModelConfig config, int[] moeLayers) throws Exception {
        int experts = config.num_experts;
        StringBuilder s = new StringBuilder("{\"model_type\":\"" + config.modelType.name().toLowerCase()
                + "\",\"tokens\":100,\"min_expert_tokens\":0,\"rare_experts\":[],\"layers\":[");
        for (int i = 0; i < moeLayers.length; i++) {
            double[] score = new double[experts];
            for (int e = 0; e < experts; e++) {
                score[e] = i > 0 ? e + 1 : e < config.num_experts_per_tok ? 100 - 10 * e : 1;
            }
            String v = Arrays.toString(score);
            s.append(i > 0 ? "," : "").append("{\"layer\":").append(moeLayers[i]).append(",\"experts\":")
                    .append(experts).append(",\"top_k\":").append(config.num_experts_per_tok)
                    .append(",\"routed_tokens\":").append(Arrays.toString(new long[experts]))
                    .append(",\"frequency\":").append(v).append(",\"reap\":").append(v).append(",\"ean\":").append(v)
                    .append("}");
        }
        Path file = tmp.resolve(model.getFileName() + "-global-scores.json");
        Files.writeString(file, s.append("]}").toString());
        return file;
    }

    private static int[] ints(String csv) {
        return Arrays.stream(csv.split(",")).mapToInt(Integer::parseInt).toArray();
    }

    private static int[] ints(JsonNode array) {
        int[] out = new int[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asInt();
        }
        return out;
    }

    private static boolean contains(int[] values, int v) {
        return Arrays.stream(values).anyMatch(x -> x == v);
    }
}
