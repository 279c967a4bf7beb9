package org.sparkmoe.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;
import static org.sparkmoe.tests.FixtureCommands.hadoop;
import static org.sparkmoe.tests.FixtureCommands.ok;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Random;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.adapter.MumoeAdapter;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.mumoe.MumoeForm;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;

/**
 * Issue 20 part 3 on the tiny Mixtral with a μMoE adapter (CP, 16 experts of rank 4 beside q_proj and every MoE
 * block, random factors drawn here): {@code calibrate --adapter} writes each file's gate mass per expert and site
 * (checked against gates computed in this test from the MoE blocks' inputs), the mutual information between file and
 * expert (checked against its definition) and the same numbers for 1 and 3 partitions; {@code eval --mute-experts}
 * compares the muted adapter with the unmuted one, and muting all experts gives the base model's NLL exactly (W = 0
 * makes every term's output exactly zero).
 */
class MumoeExpertsCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int EXPERTS = 16;
    private static final int WINDOW = 64;
    private static final int MAX_TOKENS = 1024;
    private static final MumoeConfig CONFIG = new MumoeConfig(MumoeForm.CP, EXPERTS, new int[] {4},
            MumoeConfig.parseTargets("q_proj,moe", "test"));

    @TempDir
    Path dir;

    /** A μMoE adapter with Gaussian factors: gates peaked enough that files differ, outputs small. */
    private static Path writeAdapter(Path out, ModelConfig model) {
        Random rnd = new Random(20);
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        CONFIG.expectedState(model).forEach((name, shape) -> {
            double scale = name.endsWith("gate.0") ? 4 / Math.sqrt(shape[0]) : name.endsWith(".out") ? 0.05
                    : name.endsWith(".in") ? 1 / Math.sqrt(shape[0]) : 1;
            double[] v = new double[(int) Arrays.stream(shape).reduce(1, Math::multiplyExact)];
            for (int i = 0; i < v.length; i++) {
                v[i] = rnd.nextGaussian() * scale;
            }
            state.put(name, Nd4j.create(v, shape, 'c').castTo(DataType.FLOAT));
        });
        new MumoeAdapter(CONFIG, state).write(hadoop(out), new Configuration(), model, null);
        return out;
    }

    /** The first 60,000 characters of sysadmin.txt and fortunes.txt, under their own names. */
    private List<String> data() throws Exception {
        Path corpus = Files.createDirectories(dir.resolve("corpus"));
        List<String> out = new java.util.ArrayList<>();
        for (String file : List.of("sysadmin.txt", "fortunes.txt")) {
            Path excerpt = corpus.resolve(file);
            if (!Files.exists(excerpt)) {
                Files.writeString(excerpt, Files.readString(Fixtures.corpus(file)).substring(0, 60_000));
            }
            out.add(excerpt.toString());
        }
        return out;
    }

    private JsonNode calibrate(Path adapter, String partitions) throws Exception {
        Path out = dir.resolve("calib-" + partitions);
        ok("calibrate", "--model", Fixtures.tinyModel().toString(), "--adapter", adapter.toString(), "--data",
                String.join(",", data()), "--window", Integer.toString(WINDOW), "--max-tokens-per-file",
                Integer.toString(MAX_TOKENS), "--partitions", partitions, "--master", "local[2]", "--out",
                out.toString());
        assertTrue(Files.readString(out.resolve("report.html")).contains("<h2>μMoE experts</h2>"));
        return JSON.readTree(out.resolve("mumoe-experts.json").toFile());
    }

    private JsonNode eval(String name, String... more) throws Exception {
        Path out = dir.resolve(name + ".json");
        List<String> args = new java.util.ArrayList<>(List.of("eval", "--model", Fixtures.tinyModel().toString(),
                "--data", String.join(",", data()), "--window", Integer.toString(WINDOW), "--master", "local[2]",
                "--out", out.toString()));
        args.addAll(List.of(more));
        ok(args.toArray(String[]::new));
        return JSON.readTree(out.toFile());
    }

    @Test
    void calibrateMeasuresEachFilesExpertsAndEvalMutesThem() throws Exception {
        Configuration conf = new Configuration();
        ModelConfig config = ModelFolder.readConfig(hadoop(Fixtures.tinyModel()), conf);
        Path adapter = writeAdapter(dir.resolve("adapter"), config);

        JsonNode experts = calibrate(adapter, "3");
        assertEquals(experts.toString(), calibrate(adapter, "1").toString(),
                "exact sums: the same numbers for any partitioning");
        JsonNode sites = experts.get("sites");
        assertEquals(2 * config.num_hidden_layers, sites.size(), "q_proj and moe of every layer");
        double bound = Math.log(2);
        for (JsonNode site : sites) {
            double[][] share = new double[2][];
            long[] tokens = new long[2];
            for (int f = 0; f < 2; f++) {
                JsonNode file = site.get("files").get(Path.of(data().get(f)).getFileName().toString());
                tokens[f] = file.get("tokens").asLong();
                assertEquals(MAX_TOKENS, tokens[f]);
                share[f] = doubles(file.get("share"));
                assertEquals(1.0, Arrays.stream(share[f]).sum(), 1e-9, "a file's gate mass sums to its tokens");
                assertTrue(file.get("effective_experts").asDouble() > 1
                        && file.get("effective_experts").asDouble() < EXPERTS, file.toString());
            }
            // I(F; X) = H(X) − Σ_f p(f)·H(X | F = f), the files weighted by their tokens (equal here)
            double mi = entropy(IntStream.range(0, EXPERTS).mapToDouble(n -> (share[0][n] + share[1][n]) / 2)
                    .toArray()) - (entropy(share[0]) + entropy(share[1])) / 2;
            double reported = site.get("mutual_information").asDouble();
            assertEquals(mi, reported, 1e-12, site.get("layer") + "." + site.get("site").asText());
            assertTrue(reported > 1e-4 && reported < bound, "I(file; expert) " + reported);
        }

        // the moe term's gates of layer 2 over sysadmin's windows, computed here from the MoE block's input
        MoeTransformer model = ModelCache.load(hadoop(Fixtures.tinyModel()), conf, null, null, Device.CPU);
        int[] ids = Tokenizers.cached(Fixtures.tinyModel().toUri().toString())
                .encode(TextSplit.VALID.apply(TextFiles.readUtf8(Path.of(data().get(0)).toUri().toString())));
        int[][] windows = Arrays.copyOf(Windows.cut(ids, WINDOW), MAX_TOKENS / WINDOW);
        MoeTransformer adapted = ModelCache.load(hadoop(Fixtures.tinyModel()), conf, hadoop(adapter), null, Device.CPU);
        ForwardOutput capture = adapted.forward(windows, config.num_experts_per_tok, true);
        INDArray x = capture.routerInputs().get(2).castTo(DataType.DOUBLE);                       // [T, D]
        INDArray gate = MumoeAdapter.read(hadoop(adapter), conf, config).state()
                .get("model.layers.2.block_sparse_moe.mumoe.gate.0").castTo(DataType.DOUBLE);     // [D, N]
        double[] mass = new double[EXPERTS];
        double[][] z = x.mmul(gate).toDoubleMatrix();                                              // [T, N]
        for (double[] row : z) {
            double max = Arrays.stream(row).max().orElseThrow();
            double sum = Arrays.stream(row).map(v -> Math.exp(v - max)).sum();
            for (int n = 0; n < EXPERTS; n++) {
                mass[n] += Math.exp(row[n] - max) / sum;
            }
        }
        JsonNode moe2 = sites.get(5);                                       // layer 0 q, 0 moe, 1 q, 1 moe, 2 q, 2 moe
        assertEquals(2, moe2.get("layer").asInt());
        assertEquals("moe", moe2.get("site").asText());
        double[] share = doubles(moe2.get("files").get("sysadmin.txt").get("share"));
        for (int n = 0; n < EXPERTS; n++) {
            assertEquals(mass[n] / MAX_TOKENS, share[n], 1e-6, "layer 2 moe expert " + n);
        }
        assertNotEquals(model.forward(windows, 2, false).logits().getDouble(0, 0),
                capture.logits().getDouble(0, 0), "the adapter must change the model, or muting proves nothing");

        // eval: the adapter against the base; every expert muted equals the base exactly; sysadmin's top experts
        JsonNode withAdapter = eval("adapter", "--adapter", adapter.toString(), "--baseline",
                Fixtures.tinyModel().toString());
        String all = IntStream.range(0, EXPERTS).mapToObj(Integer::toString).collect(Collectors.joining(","));
        JsonNode allMuted = eval("all-muted", "--adapter", adapter.toString(), "--mute-experts", all);
        String list = experts.get("mute").get("sysadmin.txt").asText();
        List<String> expected = new java.util.ArrayList<>();
        for (JsonNode site : sites) {
            JsonNode specific = site.get("files").get("sysadmin.txt").get("specific");
            assertTrue(specific.size() >= 1 && specific.size() <= 8, site.toString());
            for (JsonNode e : specific) {
                expected.add(site.get("layer").asInt() + "." + site.get("site").asText() + ":" + e.get("expert").asInt());
            }
        }
        assertEquals(String.join(",", expected), list, "each site's most specific experts, in site order");
        JsonNode muted = eval("muted", "--adapter", adapter.toString(), "--mute-experts", list);
        assertEquals(list, muted.get("muted_experts").asText());
        assertTrue(muted.get("baseline_adapter").asText().endsWith("adapter"), muted.toString());
        for (String file : List.of("sysadmin.txt", "fortunes.txt")) {
            JsonNode a = withAdapter.get("files").get(file);
            JsonNode none = allMuted.get("files").get(file);
            JsonNode some = muted.get("files").get(file);
            assertEquals(a.get("baseline_nll_sum").asDouble(), none.get("nll_sum").asDouble(), 0.0,
                    file + ": all experts muted is the base model");
            assertEquals(a.get("nll_sum").asDouble(), none.get("baseline_nll_sum").asDouble(), 0.0,
                    file + ": the baseline of --mute-experts is the unmuted adapter");
            assertEquals(a.get("nll_sum").asDouble(), some.get("baseline_nll_sum").asDouble(), 0.0, file);
            assertTrue(some.get("kld_mean").asDouble() > 0 && some.get("delta_ppl").asDouble() != 0, some.toString());
        }

        CliRun outside = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--adapter", adapter.toString(),
                "--data", data().get(0), "--mute-experts", "0.moe:16");
        assertEquals(1, outside.exitCode(), outside.err());
        assertTrue(outside.firstLine().contains("--mute-experts 0.moe:16: the μMoE adapter has 16 experts per site "
                + "(0..15)"), outside.err());
        CliRun noAdapter = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--data", data().get(0),
                "--mute-experts", "3");
        assertEquals(1, noAdapter.exitCode(), noAdapter.err());
        assertTrue(noAdapter.firstLine().contains("--mute-experts silences a μMoE adapter's experts; give the adapter "
                + "with --adapter"), noAdapter.err());
    }

    private static double[] doubles(JsonNode array) {
        double[] out = new double[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asDouble();
        }
        return out;
    }

    private static double entropy(double[] p) {
        return -Arrays.stream(p).filter(v -> v > 0).map(v -> v * Math.log(v)).sum();
    }
}
