package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.NamedTensor;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.io.SafeTensorsWriter;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.sparkmoe.tests.CliRun.sparkmoe;
import static org.sparkmoe.tests.FixtureCommands.ok;

/**
 * {@code eval --baseline} on the tiny Mixtral: against itself every divergence is exactly 0; against a reduced model
 * (8 → 6 experts) the report matches a float64 reference computed here from two {@code logits} runs; the report does
 * not depend on the partitioning; a baseline with another tokenizer is refused before Spark starts.
 */
class EvalBaselineTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int WINDOW = 64;
    private static Path tmp;
    private static Path data;
    private static Path reduced;

    /** The first 12,000 characters of sysadmin.txt, scored whole (--split all): ~55 windows of 64 tokens. */
    @BeforeAll
    static void reduce(@TempDir Path dir) throws Exception {
        tmp = dir;
        data = dir.resolve("sysadmin-12k.txt");
        Files.writeString(data, Files.readString(Fixtures.corpus("sysadmin.txt")).substring(0, 12_000));
        reduced = dir.resolve("reduce6");
        ok("surgery", "reduce", "--experts", "6", "--by", "weights", "--model", Fixtures.tinyModel().toString(),
                "--out", reduced.toString(), "--master", "local[2]");
    }

    private static JsonNode eval(Path model, String name, String... more) throws Exception {
        Path out = tmp.resolve(name + ".json");
        String[] args = {"eval", "--model", model.toString(), "--baseline", Fixtures.tinyModel().toString(),
                "--data", data.toString(), "--split", "all", "--window", String.valueOf(WINDOW), "--master",
                "local[2]", "--out", out.toString()};
        String[] all = Arrays.copyOf(args, args.length + more.length);
        System.arraycopy(more, 0, all, args.length, more.length);
        ok(all);
        return JSON.readTree(out.toFile());
    }

    @Test
    void againstItselfEveryDivergenceIsZero() throws Exception {
        JsonNode all = eval(Fixtures.tinyModel(), "self").get("all");
        assertTrue(all.get("tokens").asLong() > 3000, all.toString());
        assertEquals(0.0, all.get("kld_mean").asDouble(), 0.0);
        assertEquals(0.0, all.get("kld_p99").asDouble(), 0.0);
        assertEquals(0.0, all.get("kld_max").asDouble(), 0.0);
        assertEquals(1.0, all.get("same_top1").asDouble(), 0.0);
        assertEquals(0.0, all.get("delta_ppl").asDouble(), 0.0);
        assertEquals(all.get("baseline_nll_sum").asDouble(), all.get("nll_sum").asDouble(), 0.0);
    }

    /**
     * The reference: the same windows (the split cut into 64-token windows, remainder dropped) through {@code logits}
     * for both models, then per scored position in float64: log-softmax of each float32 logits row, KL(P ‖ Q) over
     * the 1024 tokens, both NLLs, first-index argmax of each row; llama.cpp's interpolated percentile.
     */
    @Test
    void reducedModelMatchesAFloat64ReferenceFromTwoLogitsRuns() throws Exception {
        JsonNode report = eval(reduced, "reduce6", "--partitions", "1");
        assertEquals(report.toString(), eval(reduced, "reduce6-p3", "--partitions", "3").toString(),
                "the report must not depend on --partitions");
        int[] tokens = Tokenizers.cached(Fixtures.tinyModel().toUri().toString())
                .encode(TextSplit.ALL.apply(TextFiles.readUtf8(data.toUri().toString())));
        int[][] windows = Windows.cut(tokens, WINDOW);
        float[] p = logits(Fixtures.tinyModel(), windows, "base");
        float[] q = logits(reduced, windows, "reduced");
        int vocab = 1024;
        int n = windows.length * (WINDOW - 1);
        double[] kld = new double[n];
        double kldSum = 0;
        double nll = 0;
        double baseNll = 0;
        long same = 0;
        int t = 0;
        for (int b = 0; b < windows.length; b++) {
            for (int s = 0; s + 1 < WINDOW; s++, t++) {
                int at = (b * WINDOW + s) * vocab;
                double[] logP = logSoftmax(p, at, vocab);
                double[] logQ = logSoftmax(q, at, vocab);
                for (int v = 0; v < vocab; v++) {
                    kld[t] += Math.exp(logP[v]) * (logP[v] - logQ[v]);
                }
                kldSum += kld[t];
                int next = windows[b][s + 1];
                nll -= logQ[next];
                baseNll -= logP[next];
                same += argmax(p, at, vocab) == argmax(q, at, vocab) ? 1 : 0;
            }
        }
        Arrays.sort(kld);
        double pos = 0.99 * (n - 1);
        int ip = (int) pos;
        double p99 = (1 - (pos - ip)) * kld[ip] + (pos - ip) * kld[ip + 1];
        JsonNode all = report.get("all");
        assertEquals(n, all.get("tokens").asLong());
        double mean = kldSum / n;
        assertTrue(mean > 1e-3, "reducing 8 → 6 experts must move the distribution, mean KLD " + mean);
        assertEquals(mean, all.get("kld_mean").asDouble(), 1e-6 * mean);
        assertEquals(p99, all.get("kld_p99").asDouble(), 1e-6 * p99);
        assertEquals(kld[n - 1], all.get("kld_max").asDouble(), 1e-6 * kld[n - 1]);
        assertEquals((double) same / n, all.get("same_top1").asDouble(), 0.5 / n);
        double ppl = Math.exp(nll / n);
        double basePpl = Math.exp(baseNll / n);
        assertEquals(ppl, all.get("ppl").asDouble(), 1e-6 * ppl);
        assertEquals(basePpl, all.get("baseline_ppl").asDouble(), 1e-6 * basePpl);
        assertEquals(ppl - basePpl, all.get("delta_ppl").asDouble(), 1e-6 * basePpl);
    }

    @Test
    void aBaselineWithAnotherTokenizerIsRefusedInOneLine() throws Exception {
        Path other = Files.createDirectories(tmp.resolve("other-tokenizer"));
        for (String file : new String[]{"config.json", "model.safetensors"}) {
            Files.copy(Fixtures.tinyModel().resolve(file), other.resolve(file));
        }
        ObjectNode tokenizer = (ObjectNode) JSON.readTree(Fixtures.tinyModel().resolve("tokenizer.json").toFile());
        ArrayNode merges = (ArrayNode) tokenizer.get("model").get("merges");
        merges.remove(merges.size() - 1);
        JSON.writeValue(other.resolve("tokenizer.json").toFile(), tokenizer);
        CliRun run = sparkmoe("eval", "--model", Fixtures.tinyModel().toString(), "--baseline", other.toString(),
                "--data", data.toString(), "--master", "local[1]");
        assertEquals(1, run.exitCode(), run.err());
        assertTrue(run.firstLine().contains("--baseline " + other + " has another tokenizer.json than the model"),
                run.err());
    }

    /** float32 logits [B·S·V] of {@code model} on {@code windows}, through {@code sparkmoe logits}. */
    private static float[] logits(Path model, int[][] windows, String name) throws Exception {
        long[] ids = Arrays.stream(windows).flatMapToInt(Arrays::stream).asLongStream().toArray();
        Path input = tmp.resolve(name + "-input.safetensors");
        SafeTensorsWriter.write(FileSystem.getLocal(new Configuration()), new org.apache.hadoop.fs.Path(input.toUri()),
                List.of(new NamedTensor.Longs("input_ids", new long[]{windows.length, WINDOW}, ids)),
                Map.of("format", "pt"));
        Path out = tmp.resolve(name + "-logits.safetensors");
        ok("logits", "--model", model.toString(), "--input-ids", input.toString(), "--out", out.toString(),
                "--master", "local[1]");
        try (SafeTensorsFile file = SafeTensorsFile.open(out)) {
            return file.readFloat("logits").data().asFloat();
        }
    }

    private static double[] logSoftmax(float[] logits, int at, int n) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, logits[at + i]);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += Math.exp(logits[at + i] - max);
        }
        double lse = max + Math.log(sum);
        double[] out = new double[n];
        for (int i = 0; i < n; i++) {
            out[i] = logits[at + i] - lse;
        }
        return out;
    }

    private static int argmax(float[] v, int at, int n) {
        int best = 0;
        for (int i = 1; i < n; i++) {
            if (v[at + i] > v[at + best]) {
                best = i;
            }
        }
        return best;
    }
}
