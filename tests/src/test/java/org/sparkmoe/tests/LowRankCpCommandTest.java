package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
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
 * {@code sparkmoe surgery lowrank --form cp} end to end on the tiny Mixtral: the CP checkpoint holds exactly what its
 * config implies, surgery.json reports errors, sweeps and parameters, any partitioning writes the same bytes, eval
 * runs it; --distill-steps trains its factors; train trains a μMoE adapter beside its frozen experts; and what is
 * not built (LoRA or router training on it) or does not apply (--base, --stats; --als-* with --form svd)
 * fails with one line.
 */
class LowRankCpCommandTest {
    private static final Configuration CONF = new Configuration();
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int E = 8;
    private static final int R = 16;

    @TempDir
    static Path tmp;

    private static DecomposedFormRuns runs() {
        return new DecomposedFormRuns("cp", R, (layout, p) -> Arrays.stream(CpFactor.values())
                .map(f -> layout.cpFactor(1, p, f)).toList(), tmp);
    }

    private static Path cp(String name, String... extra) {
        return runs().convert(name, extra);
    }

    private static void assertFails(int code, String expectedStart, String... args) {
        DecomposedFormRuns.assertFails(code, expectedStart, args);
    }

    @Test
    void writesCpExpertsThatEvalRunsIdenticallyForAnyPartitioning() throws Exception {
        Path out = cp("cp-16");
        ModelConfig config = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(out.toUri()), CONF);
        assertTrue(config.hasCpExperts());
        assertEquals(R, config.low_rank_experts_rank);
        CheckpointLayout layout = new CheckpointLayout(config.modelType);
        try (Checkpoint c = Checkpoint.open(new org.apache.hadoop.fs.Path(out.toUri()), CONF)) {
            assertEquals(ModelSchema.expected(config).keySet(), c.names());
            assertArrayEquals(new long[] {E, R}, c.shape(layout.cpFactor(2, Projection.DOWN, CpFactor.EXPERTS)));
            assertArrayEquals(new long[] {256, R}, c.shape(layout.cpFactor(2, Projection.DOWN, CpFactor.IN)));
            assertArrayEquals(new long[] {128, R}, c.shape(layout.cpFactor(2, Projection.DOWN, CpFactor.OUT)));
            assertFalse(c.names().contains(layout.expert(0, 0, Projection.GATE)), "no full experts left");
        }
        JsonNode report = JSON.readTree(out.resolve("surgery.json").toFile());
        assertEquals("cp", report.get("settings").get("form").asText());
        JsonNode layer = report.get("layers").get(3);
        double error = layer.get("w3_rel_error").asDouble();
        assertTrue(error > 0 && error < 1, "w3 error " + error);
        assertEquals(4.0, layer.get("w3_als_sweeps").asDouble(), "tolerance 1e-6 does not stop 4 sweeps here");
        assertEquals(E * 256.0 * 128, layer.get("w2_params_before").asDouble());
        assertEquals(R * (E + 128.0 + 256), layer.get("w2_params_after").asDouble());
        Path one = cp("cp-16-p1", "--partitions", "1");
        assertArrayEquals(Files.readAllBytes(one.resolve("model.safetensors")),
                Files.readAllBytes(out.resolve("model.safetensors")));
        double ppl = runs().evalPerplexity(out, null, "cp-16-eval.json");
        runs().refusesLoraTraining(out);
        runs().trainsAMumoeAdapterBesideTheFrozenExperts(out, ppl);
    }

    /**
     * {@code --distill-steps} on the cp form:
     * {@link DecomposedFormRuns#distillationTrainsEveryTensorAndLowersEveryLayersErrorForAnyPartitioning}.
     */
    @Test
    void distillationTrainsEveryFactorAndLowersEveryLayersErrorForAnyPartitioning() throws Exception {
        runs().distillationTrainsEveryTensorAndLowersEveryLayersErrorForAnyPartitioning();
    }

    @Test
    void whatIsNotBuiltOrDoesNotApplyFailsWithOneLine() {
        String model = Fixtures.tinyModel().toString();
        String out = tmp.resolve("never").toString();
        assertFails(1, "lowrank: error: --data is read only by the distillation: add --distill-steps N", "surgery",
                "lowrank", "--form", "cp", "--rank", "8", "--data", Fixtures.corpus("sysadmin.txt").toString(),
                "--model", model, "--out", out);
        assertFails(1, "lowrank: error: --base is read only by --form svd", "surgery", "lowrank", "--form", "cp",
                "--rank", "8", "--base", "mean", "--model", model, "--out", out);
        assertFails(1, "lowrank: error: --als-iterations is read only by --form cp and tr", "surgery", "lowrank",
                "--rank", "8",
                "--als-iterations", "3", "--model", model, "--out", out);
        assertFails(1, "lowrank: error: --rank must be in [1, 1024] for --form cp (num_experts 8 × min of hidden_size "
                + "128 and intermediate_size 256: an exact CP exists at that rank), got 1025", "surgery", "lowrank",
                "--form", "cp", "--rank", "1025", "--model", model, "--out", out);
        assertFails(2, "lowrank: Invalid value for option '--form': 'tucker'", "surgery", "lowrank", "--form", "tucker",
                "--rank", "8", "--model", model, "--out", out);
        assertFalse(Files.exists(tmp.resolve("never")));
    }
}
