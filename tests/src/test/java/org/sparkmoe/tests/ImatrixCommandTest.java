package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.ExactSums;
import org.sparkmoe.calib.ImatrixFile;
import org.sparkmoe.calib.SquareSums;
import org.sparkmoe.driver.Paths;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.FixtureCommands.ok;

/**
 * {@code calibrate --imatrix}: llama.cpp's GGUF importance matrix, read back by an independent reader
 * ({@link IndependentGgufReader}: Hugging Face's @huggingface/gguf), bit-identical for 1 and 3 partitions, with
 * llama.cpp's tensor names, shapes, per-expert counts and sums that are Σ x² of what the weights read; and the legacy
 * dat format, parsed as llama.cpp's {@code load_imatrix_legacy} reads it. The files stay under target/imatrix-command-test.
 */
class ImatrixCommandTest {
    private static final int WINDOW = 64;
    private static final Path OUT = Path.of("target", "imatrix-command-test").toAbsolutePath();
    private static final Configuration CONF = new Configuration();
    private static Path data;

    @BeforeAll
    static void excerpt() throws Exception {
        Files.createDirectories(OUT);
        data = Fixtures.sysadminExcerpt(OUT);
    }

    private static Path calibrate(Path model, String name, String... extra) {
        Path file = OUT.resolve(name);
        List<String> args = new ArrayList<>(List.of("calibrate", "--model", model.toString(), "--data",
                data.toString(), "--window", String.valueOf(WINDOW), "--master", "local[2]", "--out",
                OUT.resolve(name + "-calib").toString(), "--imatrix", file.toString()));
        args.addAll(List.of(extra));
        ok(args.toArray(String[]::new));
        return file;
    }

    /** The windows calibrate forwards, in chunks of its default 8 per forward pass. */
    private static List<int[][]> chunks(String model) {
        int[] tokens = Tokenizers.cached(model).encode(TextSplit.VALID.apply(TextFiles.readUtf8(data.toString())));
        int[][] windows = Windows.cut(tokens, WINDOW);
        List<int[][]> out = new ArrayList<>();
        for (int at = 0; at < windows.length; at += 8) {
            out.add(Arrays.copyOfRange(windows, at, Math.min(windows.length, at + 8)));
        }
        return out;
    }

    @Test
    void ggufIsTheSameForOneAndThreePartitionsAndAnIndependentReaderSeesEveryWeight() throws Exception {
        Path model = Fixtures.tinyModel();
        Path one = calibrate(model, "mixtral-1.gguf", "--partitions", "1");
        Path three = calibrate(model, "mixtral-3.gguf", "--partitions", "3");
        assertEquals(-1, Files.mismatch(one, three), "1 and 3 partitions must give the same bytes");

        JsonNode gguf = IndependentGgufReader.read(one);
        assertEquals(3, gguf.get("version").asInt());
        JsonNode meta = gguf.get("metadata");
        assertEquals("imatrix", meta.get("general.type").asText());
        List<int[][]> chunks = chunks(model.toUri().toString());
        int windows = chunks.stream().mapToInt(c -> c.length).sum();
        long tokens = (long) windows * WINDOW;
        assertEquals(windows, meta.get("imatrix.chunk_count").asInt());
        assertEquals(WINDOW, meta.get("imatrix.chunk_size").asInt());
        assertEquals(List.of(Paths.qualify(data.toString(), CONF)), texts(meta.get("imatrix.datasets")));

        Map<String, List<Long>> shapes = shapes(gguf);
        TreeSet<String> expected = new TreeSet<>();
        for (int l = 0; l < 4; l++) {
            for (String w : List.of("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_inp", "ffn_gate_exps",
                    "ffn_up_exps", "ffn_down_exps")) {
                expected.add("blk." + l + "." + w + ".weight.in_sum2");
                expected.add("blk." + l + "." + w + ".weight.counts");
            }
        }
        assertEquals(expected, new TreeSet<>(shapes.keySet()));
        List<String> order = new ArrayList<>(shapes.keySet());
        assertEquals(List.of("blk.0.attn_k.weight.in_sum2", "blk.0.attn_k.weight.counts"), order.subList(0, 2),
                "llama.cpp's order: names sorted, in_sum2 before counts");
        assertEquals(List.of(128L, 1L), shapes.get("blk.2.attn_q.weight.in_sum2"));
        assertEquals(List.of(128L, 1L), shapes.get("blk.2.attn_output.weight.in_sum2")); // H·hd = 4·32
        assertEquals(List.of(128L, 8L), shapes.get("blk.3.ffn_up_exps.weight.in_sum2"));
        assertEquals(List.of(256L, 8L), shapes.get("blk.3.ffn_down_exps.weight.in_sum2"));
        assertEquals(List.of(1L, 8L), shapes.get("blk.3.ffn_down_exps.weight.counts"));
        assertEquals(List.of(1L, 1L), shapes.get("blk.3.attn_v.weight.counts"));

        assertArrayEquals(new float[] {tokens}, IndependentGgufReader.floats(one, gguf, "blk.1.attn_k.weight.counts"));
        float[] expertCounts = IndependentGgufReader.floats(one, gguf, "blk.1.ffn_gate_exps.weight.counts");
        assertEquals(2.0 * tokens, sum(expertCounts), "top-2: every token counted by two experts");
        assertArrayEquals(expertCounts, IndependentGgufReader.floats(one, gguf, "blk.1.ffn_down_exps.weight.counts"));

        // the router's input, Σ x² exactly as calibrate's forward passes saw it
        MoeTransformer transformer = ModelFolder.load(new org.apache.hadoop.fs.Path(model.toUri()), CONF);
        ExactSums routerIn = new ExactSums(128);
        for (int[][] chunk : chunks) {
            float[] x = transformer.forward(chunk, 2, true).routerInputs().get(1).data().asFloat();
            for (int i = 0; i < x.length; i++) {
                routerIn.add(i % 128, (double) x[i] * x[i]);
            }
        }
        float[] gateInp = IndependentGgufReader.floats(one, gguf, "blk.1.ffn_gate_inp.weight.in_sum2");
        for (int c = 0; c < 128; c++) {
            assertEquals((float) routerIn.get(c), gateInp[c], "column " + c);
        }

        // layer 0's q, k, v read the input RMSNorm of the token embeddings: Σ x² recomputed here in double
        double[] q = new double[128];
        try (Checkpoint checkpoint = Checkpoint.open(new org.apache.hadoop.fs.Path(model.toUri()), CONF)) {
            INDArray embed = checkpoint.readFloat("model.embed_tokens.weight");
            float[] norm = checkpoint.readFloat("model.layers.0.input_layernorm.weight").data().asFloat();
            for (int[][] chunk : chunks) {
                for (int[] window : chunk) {
                    for (int id : window) {
                        float[] e = embed.getRow(id).data().asFloat();
                        double ms = IntStream.range(0, 128).mapToDouble(i -> (double) e[i] * e[i]).sum() / 128;
                        for (int c = 0; c < 128; c++) {
                            double x = e[c] / Math.sqrt(ms + 1e-5) * norm[c];
                            q[c] += x * x;
                        }
                    }
                }
            }
        }
        float[] attnQ = IndependentGgufReader.floats(one, gguf, "blk.0.attn_q.weight.in_sum2");
        for (int c = 0; c < 128; c++) {
            assertEquals(q[c], attnQ[c], 1e-5 * q[c], "column " + c);
        }
        assertArrayEquals(attnQ, IndependentGgufReader.floats(one, gguf, "blk.0.attn_v.weight.in_sum2"),
                "q, k and v read the same input");
    }

    @Test
    void badImatrixOptionsAreRefusedInOneLineBeforeSparkStarts() {
        String model = Fixtures.tinyModel().toString();
        List<String> common = List.of("calibrate", "--model", model, "--data", data.toString(), "--out",
                OUT.resolve("refused").toString());
        String[][] cases = {
                {"--imatrix-format", "dat"},
                {"--imatrix", OUT.resolve("x.gguf").toString(), "--imatrix-format", "bin"},
                {"--imatrix", OUT.toString()},
                {"--imatrix", OUT.resolve("missing/x.gguf").toString()}};
        String[] expected = {
                "calibrate: error: --imatrix-format dat needs --imatrix FILE",
                "calibrate: error: --imatrix-format must be gguf or dat, got bin",
                "calibrate: error: --imatrix " + OUT + " is a folder; expected a file to write",
                "calibrate: error: --imatrix " + OUT.resolve("missing/x.gguf") + ": the folder file:"
                        + OUT.resolve("missing") + " does not exist"};
        for (int i = 0; i < cases.length; i++) {
            List<String> args = new ArrayList<>(common);
            args.addAll(List.of(cases[i]));
            CliRun run = CliRun.sparkmoe(args);
            assertEquals(1, run.exitCode(), run.err());
            assertEquals(expected[i], run.firstLine());
        }
    }

    /** The legacy format, read as llama.cpp's load_imatrix_legacy reads it; --all-experts: every expert every token. */
    @Test
    void legacyDatHoldsTheMeanSquaresTimesTheCallsPerEntry() throws Exception {
        Path model = Fixtures.tinyModel();
        Path gguf = calibrate(model, "mixtral-all.gguf", "--all-experts");
        Path dat = calibrate(model, "mixtral-all.dat", "--all-experts", "--imatrix-format", "dat");
        JsonNode parsed = IndependentGgufReader.read(gguf);
        int windows = parsed.get("metadata").get("imatrix.chunk_count").asInt();

        ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(dat)).order(ByteOrder.LITTLE_ENDIAN);
        int entries = in.getInt();
        assertEquals(4 * 8, entries);
        List<String> names = new ArrayList<>();
        for (int i = 0; i < entries; i++) {
            byte[] name = new byte[in.getInt()];
            in.get(name);
            String n = new String(name, StandardCharsets.UTF_8);
            names.add(n);
            int ncall = in.getInt();
            float[] values = new float[in.getInt()];
            in.asFloatBuffer().get(values);
            in.position(in.position() + 4 * values.length);
            assertEquals(windows, ncall, n + ": every weight saw every window's tokens");
            float[] sums = IndependentGgufReader.floats(gguf, parsed, n + ".in_sum2");
            float[] counts = IndependentGgufReader.floats(gguf, parsed, n + ".counts");
            assertEquals(sums.length, values.length, n);
            for (int v = 0; v < values.length; v++) {
                float count = counts[v / (values.length / counts.length)];
                assertEquals((sums[v] / count) * ncall, values[v], n + "[" + v + "]");
            }
        }
        assertEquals(new ArrayList<>(new TreeSet<>(names)), names, "sorted by name");
        assertEquals(windows, in.getInt(), "the chunk count");
        byte[] dataset = new byte[in.getInt()];
        in.get(dataset);
        assertEquals(Paths.qualify(data.toString(), CONF), new String(dataset, StandardCharsets.UTF_8));
        assertEquals(0, in.remaining());
    }

    /**
     * llama.cpp's names for the other types: ungated shared experts, dense layers, MLA (with k_b and v_b), gpt-oss
     * (qwen2-moe-tiny has no tokenizer.json: {@link #qwen2MoeGetsItsGatedSharedExpertsNames}).
     */
    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
            "deepseek-v3-tiny|1,2|0|attn_q_a attn_q_b attn_kv_a_mqa attn_kv_b attn_k_b attn_v_b attn_output|"
                    + "ffn_gate_inp ffn_gate_shexp ffn_up_shexp ffn_down_shexp",
            "deepseek-v2-tiny|1,2|0|attn_q attn_kv_a_mqa attn_kv_b attn_k_b attn_v_b attn_output|"
                    + "ffn_gate_inp ffn_gate_shexp ffn_up_shexp ffn_down_shexp",
            "glm4-moe-tiny|1,2|0|attn_q attn_k attn_v attn_output|ffn_gate_inp ffn_gate_shexp ffn_up_shexp "
                    + "ffn_down_shexp",
            "gpt-oss-tiny|0,1,2||attn_q attn_k attn_v attn_output|ffn_gate_inp"})
    void everyModelTypeGetsLlamaCppsNames(String fixture, String moe, String dense, String attention, String router)
            throws Exception {
        Path model = Fixtures.root().resolve("tests/src/test/resources/reference").resolve(fixture);
        Path file = calibrate(model, fixture + ".gguf");
        JsonNode gguf = IndependentGgufReader.read(file);
        TreeSet<String> expected = new TreeSet<>();
        for (String l : moe.split(",")) {
            add(expected, l, attention + " " + router + " ffn_gate_exps ffn_up_exps ffn_down_exps");
        }
        for (String l : dense == null ? new String[0] : dense.split(",")) {
            add(expected, l, attention + " ffn_gate ffn_up ffn_down");
        }
        Map<String, List<Long>> shapes = shapes(gguf);
        assertEquals(expected, new TreeSet<>(shapes.keySet()));
        String last = "blk." + moe.substring(moe.length() - 1) + ".";
        int experts = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(model.toUri()), CONF).num_experts;
        assertEquals(List.of(1L, (long) experts), shapes.get(last + "ffn_down_exps.weight.counts"));
        if (fixture.startsWith("deepseek")) { // H = 4, dn = 8, C = 16
            assertEquals(List.of(32L, 1L), shapes.get(last + "attn_k_b.weight.in_sum2"), "each head's q_nope");
            assertEquals(List.of(64L, 1L), shapes.get(last + "attn_v_b.weight.in_sum2"), "each head's latent");
            assertEquals(List.of(16L, 1L), shapes.get(last + "attn_kv_b.weight.in_sum2"));
        }
        float[] counts = IndependentGgufReader.floats(file, gguf, last + "ffn_gate_exps.weight.counts");
        assertTrue(sum(counts) > 0, fixture + ": the experts saw tokens");
    }

    /** Qwen2-MoE's gated shared expert (ffn_gate_inp_shexp) and mlp_only layer, through the statistics directly. */
    @Test
    void qwen2MoeGetsItsGatedSharedExpertsNames() {
        Path model = Fixtures.qwenTiny();
        MoeTransformer transformer = ModelFolder.load(new org.apache.hadoop.fs.Path(model.toUri()), CONF);
        ModelConfig config = transformer.config();
        int[][] windows = new int[2][16];
        for (int i = 0; i < 32; i++) {
            windows[i / 16][i % 16] = (i * 37 + 11) % config.vocab_size;
        }
        CalibrationStats stats = CalibrationStats.empty(1, config, config.num_experts_per_tok, true);
        transformer.moeLayerPass(windows, config.num_experts_per_tok, stats.linearInputs(),
                (l, layer, block, input, logits, routed, output) ->
                        stats.addLayer(0, l, layer, input, logits, block, routed, false));
        TreeSet<String> expected = new TreeSet<>();
        for (String l : List.of("0", "2")) {
            add(expected, l, "attn_q attn_k attn_v attn_output ffn_gate_inp ffn_gate_shexp ffn_up_shexp "
                    + "ffn_gate_inp_shexp ffn_down_shexp ffn_gate_exps ffn_up_exps ffn_down_exps");
        }
        add(expected, "1", "attn_q attn_k attn_v attn_output ffn_gate ffn_up ffn_down");
        TreeSet<String> names = new TreeSet<>();
        Map<String, SquareSums> byName = new java.util.HashMap<>();
        for (ImatrixFile.Entry e : ImatrixFile.entries(config, stats.importance())) {
            names.add(e.name() + ".in_sum2");
            names.add(e.name() + ".counts");
            byName.put(e.name(), e.sums());
        }
        assertEquals(expected, names);
        assertEquals(24, byName.get("blk.2.ffn_down_shexp.weight").width(), "shared_expert_intermediate_size");
        assertEquals(48, byName.get("blk.1.ffn_down.weight").width(), "intermediate_size");
        assertArrayEquals(new long[] {32}, byName.get("blk.0.ffn_gate_inp_shexp.weight").counts());
        assertEquals(2L * 32, Arrays.stream(byName.get("blk.0.ffn_down_exps.weight").counts()).sum(), "top-2");
    }

    private static void add(TreeSet<String> names, String layer, String weights) {
        for (String w : weights.trim().split(" +")) {
            names.add("blk." + layer + "." + w + ".weight.in_sum2");
            names.add("blk." + layer + "." + w + ".weight.counts");
        }
    }

    /** Tensor name → shape, in the file's order. */
    private static Map<String, List<Long>> shapes(JsonNode gguf) {
        Map<String, List<Long>> out = new java.util.LinkedHashMap<>();
        for (JsonNode t : gguf.get("tensorInfos")) {
            List<Long> shape = new ArrayList<>();
            t.get("shape").forEach(d -> shape.add(d.asLong()));
            assertEquals(0, t.get("dtype").asInt(), t.get("name").asText() + " is F32");
            out.put(t.get("name").asText(), shape);
        }
        return out;
    }

    private static List<String> texts(JsonNode array) {
        List<String> out = new ArrayList<>();
        array.forEach(v -> out.add(v.asText()));
        return out;
    }

    private static double sum(float[] values) {
        double s = 0;
        for (float v : values) {
            s += v;
        }
        return s;
    }
}
