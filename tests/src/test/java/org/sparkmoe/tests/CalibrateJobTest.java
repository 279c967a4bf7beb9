package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.sparkmoe.calib.CalibrationStats;
import org.sparkmoe.calib.LayerRouterStats;
import org.sparkmoe.calib.RouterDataFiles;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.calib.CalibratePlan;
import org.sparkmoe.driver.calib.CalibrateJob;
import org.sparkmoe.driver.calib.CalibrationReport;
import org.sparkmoe.driver.calib.ExpertScoresJson;
import org.sparkmoe.driver.calib.RouterStatsJson;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.kernels.Dense;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.text.TextFiles;
import org.sparkmoe.text.TextSplit;
import org.sparkmoe.text.Tokenizers;
import org.sparkmoe.text.Windows;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The calibrate Spark job on a real local[2] SparkContext: partitioning never changes a bit of the statistics,
 * they equal a plain loop without Spark, and the JSON, report and exported router data are what they claim.
 */
class CalibrateJobTest {
    private static final int WINDOW = 64;
    private static final int MAX_TOKENS = 200; // 3 windows per file
    private static JavaSparkContext sc;
    private static String model;
    private static List<String> data;
    private static MoeTransformer transformer;

    @BeforeAll
    static void startSpark() {
        sc = SparkContexts.start("calibrate-job-test", "local[2]");
        model = Fixtures.tinyModel().toUri().toString();
        data = List.of(Fixtures.corpus("sysadmin.txt").toUri().toString(),
                Fixtures.corpus("scripture.txt").toUri().toString());
        transformer = ModelFolder.load(new org.apache.hadoop.fs.Path(model), new Configuration());
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    private static CalibratePlan plan(int partitions, boolean allExperts, String routerData) {
        return new CalibratePlan(model, data, TextSplit.VALID, WINDOW, MAX_TOKENS, 2, 2, partitions, allExperts,
                routerData);
    }

    private static CalibrateJob.Result run(CalibratePlan plan) {
        return CalibrateJob.run(sc, plan, transformer.config());
    }

    private static int[][] windowsOf(int file) {
        int[] tokens = Tokenizers.cached(model).encode(TextSplit.VALID.apply(TextFiles.readUtf8(data.get(file))));
        return Arrays.copyOf(Windows.cut(tokens, WINDOW), MAX_TOKENS / WINDOW);
    }

    @Test
    void onePartitionAndThreePartitionsGiveIdenticalStatistics() {
        CalibrateJob.Result one = run(plan(1, false, null));
        CalibrateJob.Result three = run(plan(3, false, null));
        assertTrue(one.stats().sameAs(three.stats()));
        assertArrayEquals(new long[] {3, 3}, one.windowsPerFile());
        assertEquals(RouterStatsJson.of(model, one.stats(), List.of("a", "b")),
                RouterStatsJson.of(model, three.stats(), List.of("a", "b")));
        assertTrue(one.stats().saliency(0).sameAs(three.stats().saliency(0)));
        assertEquals(ExpertScoresJson.of(transformer.config(), one.stats(), 1),
                ExpertScoresJson.of(transformer.config(), three.stats(), 1));
    }

    /** Distributed equals local: the same statistics from forwarding every window in one plain loop. */
    @Test
    void sparkEqualsAPlainLoopOverEveryWindow() {
        CalibrationStats spark = run(plan(2, true, null)).stats();
        CalibrationStats local = CalibrationStats.empty(2, transformer.config(), 2);
        for (int f = 0; f < 2; f++) {
            for (int[] window : windowsOf(f)) {
                ForwardOutput out = transformer.forward(new int[][] {window}, 2, true);
                List<MoeBlock> blocks = CalibrationStats.moeBlocks(transformer);
                int[] layers = CalibrationStats.moeLayerIndices(transformer.config());
                for (int l = 0; l < blocks.size(); l++) {
                    local.addLayer(f, l, layers[l], out.routerInputs().get(l), out.routerLogits().get(l),
                            blocks.get(l), null, true);
                }
            }
        }
        LayerRouterStats a = spark.layer(0);
        LayerRouterStats b = local.layer(0);
        assertArrayEquals(b.count(), a.count());
        assertEquals(b.entropySum(), a.entropySum(), 1e-4 * b.entropySum()); // batch size changes float32 GEMMs
        assertEquals(2L * 3 * WINDOW, a.tokens());
        assertEquals(2L * 3 * WINDOW * 2, Arrays.stream(a.count()).sum());
        for (int l = 0; l < spark.moeLayers(); l++) {
            assertArrayEquals(new long[] {6 * WINDOW, 6 * WINDOW, 6 * WINDOW, 6 * WINDOW, 6 * WINDOW, 6 * WINDOW,
                    6 * WINDOW, 6 * WINDOW}, spark.activations(l).tokens(), "--all-experts: every token for every expert");
        }
    }

    @Test
    void jsonHasExactlyTheDocumentedFields() throws Exception {
        CalibrateJob.Result result = run(plan(2, false, null));
        JsonNode root = new ObjectMapper().readTree(RouterStatsJson.of(model, result.stats(),
                List.of("sysadmin.txt", "scripture.txt")));
        assertEquals(List.of("model", "top_k", "experts", "tokens", "layers", "files"), fields(root));
        assertEquals(2, root.get("top_k").asInt());
        assertEquals(8, root.get("experts").asInt());
        assertEquals(6 * WINDOW, root.get("tokens").asLong());
        assertEquals(4, root.get("layers").size());
        JsonNode layer = root.get("layers").get(0);
        assertEquals(List.of("count", "prob_sum", "logit_sum", "coselect", "entropy_sum", "topm_sq_sum", "tokens"),
                fields(layer));
        assertEquals(8, layer.get("coselect").size());
        assertEquals(8, layer.get("topm_sq_sum").size());
        assertEquals(6.0 * WINDOW, layer.get("topm_sq_sum").get(0).asDouble(), 0.0); // top-1 renormalised is 1
        JsonNode files = root.get("files");
        assertEquals(List.of("sysadmin.txt", "scripture.txt"), fields(files));
        JsonNode fileLayer = files.get("scripture.txt").get("layers").get(3);
        assertEquals(List.of("count", "tokens"), fields(fileLayer));
        long sum = 0;
        for (JsonNode c : fileLayer.get("count")) {
            sum += c.asLong();
        }
        assertEquals(3L * WINDOW * 2, sum);
    }

    @Test
    void reportIsSelfContainedWithInlineSvgs() {
        CalibrateJob.Result result = run(plan(2, false, null));
        String html = CalibrationReport.html(model, "valid", result.stats(), new int[] {0, 1, 2, 3},
                List.of("sysadmin.txt", "scripture.txt"));
        long svgs = html.split("<svg", -1).length - 1;
        // the layer × expert load map + imbalance + entropy + sorted loads of the 3 worst layers
        assertEquals(1 + 2 + CalibrationReport.WORST_LAYERS, svgs, "expected every chart");
        assertEquals(svgs, html.split("</svg>", -1).length - 1);
        for (String external : List.of("http", "<script", "src=", "href=", "<link", "url(", "@import")) {
            assertFalse(html.contains(external), "the page must load nothing, found " + external);
        }
        assertTrue(html.contains("sysadmin.txt") && html.contains("top co-selected pair")
                && html.contains("Differences between files"));
    }

    @Test
    void reportCountsExpertsBelowMinExpertTokensAsRare() {
        CalibrateJob.Result result = run(plan(2, false, null));
        long[] count = result.stats().layer(0).count();
        long[] sorted = count.clone();
        Arrays.sort(sorted);
        int minTokens = (int) sorted[sorted.length / 2];            // the median: some experts below it, some not
        int rare = 0;
        for (long c : count) {
            rare += c > 0 && c < minTokens ? 1 : 0;
        }
        assertTrue(rare > 0, "the fixture should have experts below the median load");
        String html = CalibrationReport.html(model, "valid", result.stats(), new int[] {0, 1, 2, 3},
                List.of("sysadmin.txt", "scripture.txt"), Map.of(), minTokens);
        assertTrue(html.contains("fewer than " + minTokens + " tokens (--min-expert-tokens)"), "rare's definition");
        Matcher row = Pattern.compile(
                "<tr(?: class=\"worst\")?><td>0</td>(?:<td>[^<]*</td>){3}<td>(\\d+)</td><td>(\\d+)</td>").matcher(html);
        assertTrue(row.find(), "layer 0's summary row");
        assertEquals(rare, Integer.parseInt(row.group(2)), "rare experts of layer 0 below " + minTokens + " tokens");
    }

    @Test
    void exportedRouterDataAreDataSetsOfRouterInputsAndTeacherProbabilities(@TempDir Path dir) throws Exception {
        String out = dir.resolve("router-data").toUri().toString();
        run(plan(3, false, out));
        for (int layer : new int[] {0, 1, 2, 3}) {
            Path layerDir = dir.resolve("router-data").resolve("layer-" + layer);
            try (Stream<Path> files = Files.list(layerDir)) {
                assertEquals(6, files.filter(p -> !p.getFileName().toString().startsWith(".")).count());
            }
        }
        DataSet loaded = new DataSet();
        loaded.load(dir.resolve("router-data/layer-2").resolve(RouterDataFiles.fileName(1, 2)).toFile());
        int[][] window = {windowsOf(1)[2]};
        ForwardOutput capture = transformer.forward(window, 2, true);
        assertArrayEquals(new long[] {WINDOW, 128}, loaded.getFeatures().shape());
        assertArrayEquals(new long[] {WINDOW, 8}, loaded.getLabels().shape());
        INDArray expected = capture.routerInputs().get(2);
        try (Checkpoint checkpoint = Checkpoint.open(new org.apache.hadoop.fs.Path(model), new Configuration())) {
            INDArray gate = checkpoint.readFloat("model.layers.2.block_sparse_moe.gate.weight");
            assertTrue(Dense.linear(expected, gate).equalsWithEps(capture.routerLogits().get(2), 1e-5),
                    "the captured router inputs are what the router read: logits = x · Wgᵀ");
        }
        assertTrue(expected.equalsWithEps(loaded.getFeatures(), 1e-4), "features are the router inputs");
        INDArray teacher = RouterDataFiles.teacher(capture.routerLogits().get(2), false);
        assertTrue(teacher.equalsWithEps(loaded.getLabels(), 1e-5), "labels are softmax(router logits)");
        INDArray rowSums = loaded.getLabels().sum(1);
        for (int t = 0; t < WINDOW; t++) {
            assertEquals(1.0, rowSums.getDouble(t), 1e-5);
        }
    }

    private static List<String> fields(JsonNode node) {
        List<String> names = new ArrayList<>();
        Iterator<String> it = node.fieldNames();
        it.forEachRemaining(names::add);
        return names;
    }
}
