package org.sparkmoe.surgery;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.TrFactors;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.train.Seeds;

/**
 * lowrank --form tr on the two-layer Mixtral of {@link LowRankCpSurgeryTest} (E=4, D=7, I=9) whose every projection's
 * stacked experts are an exact tensor ring of ranks (2, 2, 2): the surgery at rank 3 recovers each to float32 rounding,
 * names and shapes its cores as the TR checkpoint format says, reports error, sweeps and parameters, writes the config fields,
 * repeats its bits, and refuses what it does not cover in one line.
 */
class LowRankTrSurgeryTest {
    static final int E = LowRankCpSurgeryTest.E;
    static final int D = LowRankCpSurgeryTest.D;
    static final int I = LowRankCpSurgeryTest.I;
    static final int R = 2;

    /** Expert e of projection p in layer l: the weight of Gaussian cores of ranks (2, 2, 2), float32. */
    static SurgeryFixtures.MapSource exactTr(ModelConfig c, long seed) {
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        Random rnd = new Random(seed);
        Map<String, INDArray> t = new LinkedHashMap<>();
        for (int l = 0; l < c.num_hidden_layers; l++) {
            for (Projection p : Projection.values()) {
                long in = p == Projection.DOWN ? I : D;
                long out = p == Projection.DOWN ? D : I;
                TrFactors f = new TrFactors(TrAlsTest.gaussian(rnd, R, E, R), TrAlsTest.gaussian(rnd, R, in, R),
                        TrAlsTest.gaussian(rnd, R, out, R));
                for (int e = 0; e < E; e++) {
                    t.put(layout.expert(l, e, p), f.weight(e).castTo(DataType.FLOAT));
                }
            }
        }
        return new SurgeryFixtures.MapSource(t);
    }

    @Test
    void storesTheFitsCoresAndNamesThem() {
        ModelConfig c = LowRankCpSurgeryTest.mixtral();
        LowRankTrSurgery surgery = new LowRankTrSurgery(c, R, 300, 1e-12, 42);
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        for (int l = 0; l < 2; l++) {
            LayerResult r = surgery.apply(exactTr(c, 3), l, l);
            assertEquals(9, r.tensors().size(), "three cores for each of three projections");
            assertArrayEquals(new long[] {R, E, R}, r.tensors().get(layout.trCore(l, Projection.GATE, TrCore.EXPERTS))
                    .shape());
            assertArrayEquals(new long[] {R, D, R}, r.tensors().get(layout.trCore(l, Projection.GATE, TrCore.IN))
                    .shape());
            assertArrayEquals(new long[] {R, I, R}, r.tensors().get(layout.trCore(l, Projection.GATE, TrCore.OUT))
                    .shape());
            assertArrayEquals(new long[] {R, I, R}, r.tensors().get(layout.trCore(l, Projection.DOWN, TrCore.IN))
                    .shape());
            assertArrayEquals(new long[] {R, D, R}, r.tensors().get(layout.trCore(l, Projection.DOWN, TrCore.OUT))
                    .shape());
            for (Projection p : Projection.values()) {
                String proj = layout.projectionName(p);
                ExpertStack stack = ExpertStack.of(exactTr(c, 3), layout, l, E, p);
                AlsFit fit = TrAls.fit(stack, R, R, R, 300, 1e-12, Seeds.derive(42, "lowrank-tr/layer/" + l + "/"
                        + proj));
                assertEquals(fit.experts().castTo(DataType.FLOAT), r.tensors().get(layout.trCore(l, p,
                        TrCore.EXPERTS)), "layer " + l + " " + proj + ": the fit's G_N");
                double error = r.metrics().get(proj + "_rel_error");
                assertEquals(fit.relError(), error, 1e-5, "layer " + l + " " + proj + " error of the stored cores");
                assertEquals(E * D * I, r.metrics().get(proj + "_params_before"), proj);
                assertEquals(R * R * (E + D + I), r.metrics().get(proj + "_params_after"), proj);
                assertEquals(fit.iterations(), r.metrics().get(proj + "_als_sweeps"), proj + " sweeps");
            }
            r.tensors().values().forEach(a -> assertEquals(DataType.FLOAT, a.dataType()));
        }
    }

    @Test
    void theSeedFixesTheBits() {
        ModelConfig c = LowRankCpSurgeryTest.mixtral();
        LayerResult a = new LowRankTrSurgery(c, 3, 20, 0, 7).applyPart(exactTr(c, 4), 1, 1, 2);
        LayerResult b = new LowRankTrSurgery(c, 3, 20, 0, 7).applyPart(exactTr(c, 4), 1, 1, 2);
        LayerResult other = new LowRankTrSurgery(c, 3, 20, 0, 8).applyPart(exactTr(c, 4), 1, 1, 2);
        assertEquals(a.tensors(), b.tensors());
        assertNotEquals(a.tensors(), other.tensors(), "another --seed, another start");
    }

    @Test
    void configNamesTheFormAndRank() {
        ObjectNode json = new LowRankTrSurgery(LowRankCpSurgeryTest.mixtral(), 5, 10, 1e-6, 1)
                .config(LowRankCpSurgeryTest.mixtral());
        assertEquals(5, json.get(ModelConfig.LOW_RANK_FIELD).asInt());
        assertEquals("tr", json.get(ModelConfig.LOW_RANK_FORM_FIELD).asText());
        assertTrue(ModelConfig.parse(json.toString(), "new").hasTrExperts());
    }

    @Test
    void refusesInOneLine() {
        ModelConfig c = LowRankCpSurgeryTest.mixtral();
        assertEquals("--rank must be in [1, 9] for --form tr (max of num_experts 4, hidden_size 7 and "
                        + "intermediate_size 9: an exact tensor ring exists at that rank), got 10",
                assertThrows(IllegalArgumentException.class, () -> new LowRankTrSurgery(c, 10, 10, 0, 1)).getMessage());
        assertEquals("--rank must be in [1, 9] for --form tr (max of num_experts 4, hidden_size 7 and "
                        + "intermediate_size 9: an exact tensor ring exists at that rank), got 0",
                assertThrows(IllegalArgumentException.class, () -> new LowRankTrSurgery(c, 0, 10, 0, 1)).getMessage());
        assertEquals("--als-iterations must be ≥ 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> new LowRankTrSurgery(c, 2, 0, 0, 1)).getMessage());
        assertEquals("--als-tolerance must be ≥ 0, got -1.0",
                assertThrows(IllegalArgumentException.class, () -> new LowRankTrSurgery(c, 2, 5, -1, 1)).getMessage());
        ModelConfig lowRank = ModelConfig.parse(c.jsonCopy().put(ModelConfig.LOW_RANK_FIELD, 2).toString(), "test");
        assertEquals("lowrank --form tr needs a model with full experts without biases and no gated shared expert "
                        + "(mixtral, qwen3_moe, olmoe, glm4_moe, deepseek_v2, deepseek_v3), got model_type mixtral "
                        + "already low-rank",
                assertThrows(IllegalArgumentException.class, () -> new LowRankTrSurgery(lowRank, 2, 5, 0, 1))
                        .getMessage());
    }
}
