package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelSchema;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code sparkmoe surgery lowrank --form tr} end to end on the tiny Mixtral: the TR checkpoint holds exactly what its
 * config implies, surgery.json reports errors, sweeps and parameters, any partitioning writes the same bytes, eval
 * runs it; --distill-steps trains its cores; train trains a μMoE adapter beside its frozen experts; and what is not
 * built (LoRA or router training on it) or does not apply (--stats) fails with one line.
 */
class LowRankTrCommandTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int E = 8;
    private static final int R = 4;

    @TempDir
    static Path tmp;

    private static DecomposedFormRuns runs() {
        return new DecomposedFormRuns("tr", R, (layout, p) -> Arrays.stream(TrCore.values())
                .map(f -> layout.trCore(1, p, f)).toList(), tmp);
    }

    private static Path tr(String name, String... extra) {
        return runs().convert(name, extra);
    }

    private static void assertFails(int code, String expectedStart, String... args) {
        DecomposedFormRuns.assertFails(code, expectedStart, args);
    }

    @Test
    void writesTrExpertsThatEvalRunsIdenticallyForAnyPartitioning() throws Exception {
        Path out = tr("tr-4");
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(out.toUri()), CONF);
        assertTrue(config.hasTrExperts());
        assertEquals(R, config.low_rank_experts_rank);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        try (Checkpoint c = Checkpoint.open(new org.apache.hadoop.fs.Path(out.toUri()), CONF)) {
            assertEquals(ModelSchema.expected(config).keySet(), c.names());
            assertArrayEquals(new long[] {R, E, R}, c.shape(layout.trCore(2, Projection.DOWN, TrCore.EXPERTS)));
            assertArrayEquals(new long[] {R, 256, R}, c.shape(layout.trCore(2, Projection.DOWN, TrCore.IN)));
            assertArrayEquals(new long[] {R, 128, R}, c.shape(layout.trCore(2, Projection.DOWN, TrCore.OUT)));
            assertFalse(c.names().contains(layout.expert(0, 0, Projection.GATE)), "no full experts left");
        }
        JsonNode report = JSON.readTree(out.resolve("surgery.json").toFile());
        assertEquals("tr", report.get("settings").get("form").asText());
        JsonNode layer = report.get("layers").get(3);
        double error = layer.get("w3_rel_error").asDouble();
        assertTrue(error > 0 && error < 1, "w3 error " + error);
        assertEquals(4.0, layer.get("w3_als_sweeps").asDouble(), "tolerance 1e-6 does not stop 4 sweeps here");
        assertEquals(E * 256.0 * 128, layer.get("w2_params_before").asDouble());
        assertEquals(R * R * (E + 128.0 + 256), layer.get("w2_params_after").asDouble());
        Path one = tr("tr-4-p1", "--partitions", "1");
        assertArrayEquals(Files.readAllBytes(one.resolve("model.safetensors")),
                Files.readAllBytes(out.resolve("model.safetensors")));
        double ppl = runs().evalPerplexity(out, null, "tr-4-eval.json");
        runs().refusesLoraTraining(out);
        runs().trainsAMumoeAdapterBesideTheFrozenExperts(out, ppl);
    }

    /**
     * {@code --distill-steps} on the tr form:
     * {@link DecomposedFormRuns#distillationTrainsEveryTensorAndLowersEveryLayersErrorForAnyPartitioning}.
     */
    @Test
    void distillationTrainsEveryCoreAndLowersEveryLayersErrorForAnyPartitioning() throws Exception {
        runs().distillationTrainsEveryTensorAndLowersEveryLayersErrorForAnyPartitioning();
    }

    @Test
    void whatIsNotBuiltOrDoesNotApplyFailsWithOneLine() {
        String model = Fixtures.tinyModel().toString();
        String out = tmp.resolve("never").toString();
        assertFails(1, "lowrank: error: --data is read only by the distillation: add --distill-steps N", "surgery",
                "lowrank", "--form", "tr", "--rank", "8", "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--model", model, "--out", out);
        assertFails(1, "lowrank: error: --stats is read only by --form svd", "surgery", "lowrank", "--form", "tr",
                "--rank", "8", "--stats", "x", "--model", model, "--out", out);
        assertFails(1, "lowrank: error: --rank must be in [1, 256] for --form tr (max of num_experts 8, hidden_size "
                + "128 and intermediate_size 256: an exact tensor ring exists at that rank), got 257", "surgery",
                "lowrank", "--form", "tr", "--rank", "257", "--model", model, "--out", out);
        assertFails(2, "lowrank: Invalid value for option '--form': 'tucker' (expected one of cp, svd, tr)", "surgery",
                "lowrank", "--form", "tucker", "--rank", "8", "--model", model, "--out", out);
        assertFalse(Files.exists(tmp.resolve("never")));
    }
}
