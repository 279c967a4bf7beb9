package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.driver.calib.CalibrationReport;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.routing.Router;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * calibrate's report.html in headless Chromium, at the tiny fixture (4 layers × 8 experts, from a real calibrate run)
 * and at Qwen3-30B-A3B's routing shape (48 layers × 128 experts, top-8, statistics built here from seeded random
 * routings with REAP scores): no console error, one load-map cell per (layer, expert), a screenshot under
 * target/ (report-tiny.png, report-48x128.png) to look at.
 */
class ReportBrowserTest {
    private static final int LAYERS = 48;
    private static final int EXPERTS = 128;
    private static final int TOP_K = 8;
    private static final String CELLS = "document.querySelectorAll('#heatmap rect.cell').length";

    @Test
    void tinyFixtureReportRendersWithoutErrors(@TempDir Path tmp) throws Exception {
        Path model = Fixtures.tinyModel();
        ModelConfig config = ModelFolder.readConfig(FixtureCommands.hadoop(model), new Configuration());
        FixtureCommands.calibrate(model, config, tmp);
        Path page = tmp.resolve("calib/report.html");
        Files.copy(page, target("report-tiny.html"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        HeadlessChromium.Loaded loaded = render(page, "report-tiny.png");
        assertEquals(4 * 8, loaded.value().asInt(), "load-map cells");
    }

    @Test
    void qwen3ShapedReportRendersWithoutErrorsAndStaysSmall() throws Exception {
        String html = CalibrationReport.html("synthetic qwen3-30b-a3b shape", "valid", qwen3ShapedStats(),
                java.util.stream.IntStream.range(0, LAYERS).toArray(), List.of("a.txt", "b.txt"), reap(), 0);
        Path page = target("report-48x128.html");
        Files.writeString(page, html);
        long bytes = Files.size(page);
        assertTrue(bytes < 2_000_000, "report of 48 x 128 experts is " + bytes + " bytes");
        for (String external : List.of("http", "<script", "src=", "<link", "url(", "@import")) {
            assertFalse(html.contains(external), "the page must load nothing, found " + external);
        }
        assertTrue(html.contains("REAP max/median") && html.contains("Worst layers")
                && html.contains("Differences between files"), "report sections");
        HeadlessChromium.Loaded loaded = render(page, "report-48x128.png");
        assertEquals(LAYERS * EXPERTS, loaded.value().asInt(), "load-map cells");
    }

    private static HeadlessChromium.Loaded render(Path page, String png) throws Exception {
        try (HeadlessChromium chromium = new HeadlessChromium()) {
            HeadlessChromium.Loaded loaded = chromium.load(page, 1400, CELLS);
            assertEquals(List.of(), loaded.errors(), "console errors of " + page);
            assertTrue(loaded.png().length > 10_000, "a screenshot of " + page);
            Files.write(target(png), loaded.png());
            return loaded;
        }
    }

    /** tests/target/NAME. */
    private static Path target(String name) throws Exception {
        return Files.createDirectories(Fixtures.root().resolve("tests/target")).resolve(name);
    }

    /**
     * Two files of 512 tokens per MoE layer, softmax routing over logits N(0,1) + a per-expert bias N(0, σ_l) with
     * σ_l growing from 0.1 to 1.2 over the layers (later layers less balanced), and in every 8th layer 3 experts
     * biased by −40 (never selected).
     */
    private static CalibrationStats qwen3ShapedStats() {
        ModelConfig config = ModelConfig.parse("""
                {"model_type": "qwen3_moe", "vocab_size": 1024, "hidden_size": 16, "intermediate_size": 32,
                 "moe_intermediate_size": 8, "num_hidden_layers": 48, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "head_dim": 8, "num_experts": 128, "num_experts_per_tok": 8,
                 "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [],
                 "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0}""", "qwen3-48x128");
        CalibrationStats stats = CalibrationStats.empty(2, config, TOP_K);
        Random random = new Random(48128);
        int tokens = 512;
        for (int l = 0; l < LAYERS; l++) {
            double sigma = 0.1 + 1.1 * l / (LAYERS - 1);
            double[] bias = new double[EXPERTS];
            for (int e = 0; e < EXPERTS; e++) {
                bias[e] = sigma * random.nextGaussian() - (l % 8 == 7 && e < 3 ? 40 : 0);
            }
            for (int f = 0; f < 2; f++) {
                float[][] logits = new float[tokens][EXPERTS];
                Router.Ranking[] rankings = new Router.Ranking[tokens];
                for (int t = 0; t < tokens; t++) {
                    for (int e = 0; e < EXPERTS; e++) {
                        logits[t][e] = (float) (bias[e] + random.nextGaussian() + (f == 1 && e % 16 == 0 ? 1 : 0));
                    }
                    rankings[t] = ranking(logits[t]);
                }
                stats.file(f, l).add(Nd4j.createFromArray(logits), rankings);
            }
        }
        return stats;
    }

    /** Softmax scores and every expert in descending order of score. */
    private static Router.Ranking ranking(float[] logits) {
        double max = Double.NEGATIVE_INFINITY;
        for (float z : logits) {
            max = Math.max(max, z);
        }
        double[] p = new double[logits.length];
        double sum = 0;
        for (int e = 0; e < p.length; e++) {
            p[e] = Math.exp(logits[e] - max);
            sum += p[e];
        }
        for (int e = 0; e < p.length; e++) {
            p[e] /= sum;
        }
        int[] order = java.util.stream.IntStream.range(0, p.length).boxed()
                .sorted((a, b) -> Double.compare(p[b], p[a])).mapToInt(Integer::intValue).toArray();
        return new Router.Ranking(p, null, order, null, null);
    }

    /** REAP scores for every layer but the last (whose column shows "—"), log-normally spread. */
    private static Map<Integer, double[]> reap() {
        Random random = new Random(7);
        Map<Integer, double[]> out = new LinkedHashMap<>();
        for (int l = 0; l < LAYERS - 1; l++) {
            double[] scores = new double[EXPERTS];
            Arrays.setAll(scores, e -> Math.exp(random.nextGaussian()));
            out.put(l, scores);
        }
        return out;
    }
}
