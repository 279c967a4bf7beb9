package org.sparkmoe.surgery;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;

/**
 * lowrank --form cp on a two-layer Mixtral (E=4, D=7, I=9) whose every projection's stacked experts are an exact
 * rank-3 CP tensor: the surgery recovers each to float32 rounding, names and shapes its factors as the CP checkpoint
 * format says, reports error, sweeps and parameters, writes the config fields, repeats its bits, and refuses what it
 * does not cover in one line.
 */
class LowRankCpSurgeryTest {
    static final int E = 4;
    static final int D = 7;
    static final int I = 9;
    static final int R = 3;

    /** Mixtral, 2 layers, D 7, I 9, E 4, top-2. */
    static ModelConfig mixtral() {
        return ModelConfig.parse("{\"model_type\":\"mixtral\",\"vocab_size\":5,\"hidden_size\":" + D
                + ",\"intermediate_size\":" + I + ",\"num_hidden_layers\":2,\"num_attention_heads\":1,"
                + "\"num_key_value_heads\":1,\"head_dim\":2,\"rms_norm_eps\":1e-5,\"max_position_embeddings\":8,"
                + "\"rope_theta\":10000.0,\"num_local_experts\":" + E + ",\"num_experts_per_tok\":2}", "test config");
    }

    /** Expert e of projection p in layer l: U_O·diag(U_N[e])·U_Iᵀ of Gaussian factors, float32. */
    static SurgeryFixtures.MapSource exactCp(ModelConfig c, long seed) {
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        Random rnd = new Random(seed);
        Map<String, INDArray> t = new LinkedHashMap<>();
        for (int l = 0; l < c.num_hidden_layers; l++) {
            for (Projection p : Projection.values()) {
                long in = p == Projection.DOWN ? I : D;
                long out = p == Projection.DOWN ? D : I;
                INDArray n = CpAlsTest.gaussian(rnd, E, R);
                INDArray i = CpAlsTest.gaussian(rnd, in, R);
                INDArray o = CpAlsTest.gaussian(rnd, out, R);
                for (int e = 0; e < E; e++) {
                    t.put(layout.expert(l, e, p), o.mulRowVector(n.getRow(e)).mmul(i.transpose()).castTo(DataType.FLOAT));
                }
            }
        }
        return new SurgeryFixtures.MapSource(t);
    }

    @Test
    void recoversExactCpExpertsAndNamesTheFactors() {
        ModelConfig c = mixtral();
        LowRankCpSurgery surgery = new LowRankCpSurgery(c, R, 300, 1e-9, 42);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        for (int l = 0; l < 2; l++) {
            LayerResult r = surgery.apply(exactCp(c, 3), l, l);
            assertEquals(9, r.tensors().size(), "three factors for each of three projections");
            assertArrayEquals(new long[] {E, R}, r.tensors().get(layout.cpFactor(l, Projection.GATE, CpFactor.EXPERTS)).shape());
            assertArrayEquals(new long[] {D, R}, r.tensors().get(layout.cpFactor(l, Projection.GATE, CpFactor.IN)).shape());
            assertArrayEquals(new long[] {I, R}, r.tensors().get(layout.cpFactor(l, Projection.GATE, CpFactor.OUT)).shape());
            assertArrayEquals(new long[] {I, R}, r.tensors().get(layout.cpFactor(l, Projection.DOWN, CpFactor.IN)).shape());
            assertArrayEquals(new long[] {D, R}, r.tensors().get(layout.cpFactor(l, Projection.DOWN, CpFactor.OUT)).shape());
            for (String proj : new String[] {"w1", "w3", "w2"}) {
                double error = r.metrics().get(proj + "_rel_error");
                assertTrue(error <= 1e-5, "layer " + l + " " + proj + " relative error " + error);
                assertEquals(E * D * I, r.metrics().get(proj + "_params_before"), proj);
                assertEquals(R * (E + D + I), r.metrics().get(proj + "_params_after"), proj);
                double sweeps = r.metrics().get(proj + "_als_sweeps");
                assertTrue(sweeps >= 2 && sweeps <= 300, proj + " sweeps " + sweeps);
            }
            r.tensors().values().forEach(a -> assertEquals(DataType.FLOAT, a.dataType()));
        }
    }

    @Test
    void theSeedFixesTheBits() {
        ModelConfig c = mixtral();
        LayerResult a = new LowRankCpSurgery(c, 3, 20, 0, 7).applyPart(exactCp(c, 4), 1, 1, 2);
        LayerResult b = new LowRankCpSurgery(c, 3, 20, 0, 7).applyPart(exactCp(c, 4), 1, 1, 2);
        LayerResult other = new LowRankCpSurgery(c, 3, 20, 0, 8).applyPart(exactCp(c, 4), 1, 1, 2);
        assertEquals(a.tensors(), b.tensors());
        assertTrue(!a.tensors().equals(other.tensors()), "another --seed, another start");
    }

    @Test
    void configNamesTheFormAndRank() {
        ObjectNode json = new LowRankCpSurgery(mixtral(), 5, 10, 1e-6, 1)
                .config(mixtral());
        assertEquals(5, json.get(ModelConfig.LOW_RANK_FIELD).asInt());
        assertEquals("cp", json.get(ModelConfig.LOW_RANK_FORM_FIELD).asText());
        assertTrue(ModelConfig.parse(json.toString(), "new").hasCpExperts());
    }

    @Test
    void refusesInOneLine() {
        ModelConfig c = mixtral();
        assertEquals("--rank must be in [1, 28] for --form cp (num_experts 4 × min of hidden_size 7 and "
                        + "intermediate_size 9: an exact CP exists at that rank), got 29",
                assertThrows(IllegalArgumentException.class, () -> new LowRankCpSurgery(c, 29, 10, 0, 1)).getMessage());
        assertEquals("--als-iterations must be ≥ 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> new LowRankCpSurgery(c, 2, 0, 0, 1)).getMessage());
        assertEquals("--als-tolerance must be ≥ 0, got -1.0",
                assertThrows(IllegalArgumentException.class, () -> new LowRankCpSurgery(c, 2, 5, -1, 1)).getMessage());
        ModelConfig gptOss = ModelConfig.parse("{\"model_type\": \"gpt_oss\", \"vocab_size\": 16, \"hidden_size\": 6, "
                + "\"intermediate_size\": 4, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"head_dim\": 4, "
                + "\"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"rms_norm_eps\": 1e-5, "
                + "\"max_position_embeddings\": 32, \"sliding_window\": 4, "
                + "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 10000.0}}", "test");
        assertEquals("lowrank --form cp needs a model with full experts without biases and no gated shared expert "
                        + "(mixtral, qwen3_moe, olmoe, glm4_moe, deepseek_v2, deepseek_v3), got model_type gpt_oss "
                        + "(expert biases)",
                assertThrows(IllegalArgumentException.class, () -> new LowRankCpSurgery(gptOss, 2, 5, 0, 1))
                        .getMessage());
    }
}
