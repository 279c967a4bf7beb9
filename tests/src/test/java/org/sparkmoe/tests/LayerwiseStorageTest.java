package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.eval.PerplexityReport;
import org.sparkmoe.driver.layerwise.LayerBytes;
import org.sparkmoe.driver.layerwise.LayerwisePlan;
import org.sparkmoe.text.TextSplit;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What a layer-sequential pass reports it stored, per decoder layer (the driver's progress line and eval's
 * {@code layerwise} report section), on the tiny Mixtral (4 MoE layers, D = 128, top-2) over a real local[2]
 * SparkContext, with 2 expert groups (so every layer persists step RDDs) and a checkpoint after layers 1 and 3.
 * The numbers must be what the hidden states weigh: a chunk's hidden states are [B·S, D] float32, so every layer's
 * stored output and every checkpoint holds at least windows × 64 × 128 × 4 bytes, the same for every layer (same
 * shapes, same serialised length); the steps hold h and norm2(h) and the K = 2 routed rows per token, at least twice
 * that.
 */
class LayerwiseStorageTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int WINDOW = 64;
    private static JavaSparkContext sc;
    private static List<String> data;

    @BeforeAll
    static void startSpark(@TempDir Path dir) throws Exception {
        sc = SparkContexts.start("layerwise-storage-test", "local[2]");
        data = List.of(Fixtures.sysadminExcerpt(dir).toUri().toString());
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    private static EvalPlan plan(int partitions) {
        return new EvalPlan(Fixtures.tinyModel().toUri().toString(), data, TextSplit.TRAIN, WINDOW, 2, 4, partitions);
    }

    @Test
    void everyLayerReportsTheBytesItsHiddenStatesAndCheckpointsWeigh(@TempDir Path dir) throws Exception {
        PerplexityReport wholeReport = EvalJob.run(sc, plan(1));
        String whole = wholeReport.toJson();
        PrintStream saved = System.err;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        PerplexityReport report;
        System.setErr(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            report = EvalJob.runLayerwise(sc, plan(3), new LayerwisePlan(2, dir.toUri().toString(), 2));
        } finally {
            System.setErr(saved);
        }
        assertEquals(whole, report.toJson(), "the scores keep their bits");

        long windows = report.all().tokens() / (WINDOW - 1);
        long raw = windows * WINDOW * 128 * 4;                     // every chunk's [B·S, D] float32 hidden states
        List<LayerBytes> stored = report.layerwise();
        assertEquals(4, stored.size());
        for (int l = 0; l < 4; l++) {
            LayerBytes b = stored.get(l);
            assertEquals(l, b.layer());
            assertTrue(b.hidden() >= raw && b.hidden() < raw * 11 / 10, "layer " + l + " " + b + ", raw " + raw);
            assertEquals(stored.get(0).hidden(), b.hidden(), "the same shapes every layer: " + stored);
            assertTrue(b.steps() >= 2 * raw, "layer " + l + " steps " + b.steps() + ", raw " + raw);
            if (l % 2 == 1) {
                assertTrue(b.checkpoint() >= raw && b.checkpoint() < raw * 11 / 10, "layer " + l + " " + b);
            } else {
                assertEquals(0, b.checkpoint(), "layer " + l + " is not checkpointed");
            }
        }
        String log = captured.toString(StandardCharsets.UTF_8);
        assertTrue(log.contains("eval --layerwise: layer 3: hidden states "), log);
        assertTrue(log.lines().anyMatch(line -> line.startsWith("eval --layerwise: layer 1: ")
                && line.contains(", checkpoint ")), log);

        // eval --out: the scores byte for byte, then the sums over the layers and the layers themselves
        String written = report.reportJson();
        String scores = whole.substring(0, whole.lastIndexOf("\n}"));
        assertTrue(written.startsWith(scores + ",\n  \"layerwise\" : {"), written);
        JsonNode section = JSON.readTree(written).get("layerwise");
        assertEquals(4, section.get("layers").asInt());
        assertEquals(stored.stream().mapToLong(LayerBytes::hidden).sum(),
                section.get("hidden_memory_bytes").asLong() + section.get("hidden_disk_bytes").asLong());
        assertEquals(stored.get(1).checkpoint() + stored.get(3).checkpoint(), section.get("checkpoint_bytes").asLong());
        assertEquals(stored.get(2).steps(), section.get("per_layer").get(2).get("steps").asLong());
        ObjectNode withoutSection = (ObjectNode) JSON.readTree(written);
        withoutSection.remove("layerwise");
        assertEquals(JSON.readTree(whole), withoutSection);
        assertEquals(whole, wholeReport.reportJson(), "no section without --layerwise");
    }
}
