package org.sparkmoe.adapter;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.AdapterTerms.Key;
import org.sparkmoe.model.AdapterTerms.Site;
import org.sparkmoe.mumoe.MumoeForm;

/** eval --mute-experts' list: its spelling, its checks against the adapter, and what it zeroes in the adapter. */
class MutedExpertsTest {
    private static final MumoeConfig TR = new MumoeConfig(MumoeForm.TR, 6, new int[] {2, 3, 4},
            MumoeConfig.parseTargets("v_proj,moe", "test"));

    @Test
    void parsesSiteEntriesAndBareExpertsAndSpellsThemBack() {
        MutedExperts m = MutedExperts.parse("0.moe:3, 2.v_proj:5,4,0.moe:3");
        assertEquals("0.moe:3,2.v_proj:5,4", m.toString());
        assertArrayEquals(new int[] {3, 4}, m.at(new Key(0, Site.MOE)));
        assertArrayEquals(new int[] {4, 5}, m.at(new Key(2, Site.V_PROJ)));
        assertArrayEquals(new int[] {4}, m.at(new Key(1, Site.MOE)));
        assertEquals(m, MutedExperts.parse(m.toString()));
    }

    @Test
    void badEntriesAreOneLineNamingTheEntry() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MutedExperts.parse("0moe:3"));
        assertEquals("--mute-experts: entry '0moe:3' is not LAYER.SITE:EXPERT (e.g. 0.moe:12) or EXPERT (at every "
                + "site): no '.' between layer and site", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> MutedExperts.parse("1.up_proj:2"));
        assertTrue(e.getMessage().startsWith("--mute-experts: entry '1.up_proj:2' is not LAYER.SITE:EXPERT"),
                e.getMessage());
        ModelConfig model = AdapterFixtures.mixtral();
        MumoeAdapter adapter = new MumoeAdapter(TR, state(model));
        e = assertThrows(IllegalArgumentException.class, () -> adapter.muted(MutedExperts.parse("1.q_proj:2"), model));
        assertTrue(e.getMessage().startsWith("--mute-experts 1.q_proj:2: the μMoE adapter has no term beside q_proj "
                + "in layer 1; its sites are 0.v_proj, 0.moe,"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> adapter.muted(MutedExperts.parse("6"), model));
        assertEquals("--mute-experts 6: the μMoE adapter has 6 experts per site (0..5)", e.getMessage());
    }

    @Test
    void mutingZeroesTheNamedExpertsSliceOfTheNamedSitesOnly() {
        ModelConfig model = AdapterFixtures.mixtral();
        LinkedHashMap<String, INDArray> state = state(model);
        MumoeAdapter muted = new MumoeAdapter(TR, state).muted(MutedExperts.parse("1.moe:2,4"), model);
        String moe1 = "model.layers.1.block_sparse_moe.mumoe.core.expert";          // [r1, N, r2]
        INDArray a = muted.state().get(moe1);
        for (int n = 0; n < 6; n++) {
            double norm = a.get(NDArrayIndex.all(), NDArrayIndex.point(n), NDArrayIndex.all()).norm2Number()
                    .doubleValue();
            assertEquals(n == 2 || n == 4, norm == 0.0, "layer 1 moe expert " + n + ": |slice| " + norm);
        }
        INDArray v0 = muted.state().get("model.layers.0.self_attn.v_proj.mumoe.core.expert");
        assertEquals(0.0, v0.get(NDArrayIndex.all(), NDArrayIndex.point(4), NDArrayIndex.all()).norm2Number()
                .doubleValue(), 0.0);
        assertTrue(v0.get(NDArrayIndex.all(), NDArrayIndex.point(2), NDArrayIndex.all()).norm2Number().doubleValue()
                > 0, "expert 2 is muted at 1.moe only");
        assertTrue(state.get(moe1).get(NDArrayIndex.all(), NDArrayIndex.point(2), NDArrayIndex.all()).norm2Number()
                .doubleValue() > 0, "the unmuted adapter's tensors stay as they were");
        assertSame(state.get("model.layers.1.block_sparse_moe.mumoe.core.in"),
                muted.state().get("model.layers.1.block_sparse_moe.mumoe.core.in"), "other tensors are shared");
    }

    private static LinkedHashMap<String, INDArray> state(ModelConfig model) {
        Nd4j.getRandom().setSeed(4);
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        TR.expectedState(model).forEach((k, shape) -> state.put(k, Nd4j.randn(DataType.FLOAT, shape)));
        return state;
    }
}
