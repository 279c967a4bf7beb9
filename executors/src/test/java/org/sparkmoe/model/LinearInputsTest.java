package org.sparkmoe.model;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Dense;

import java.util.EnumMap;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.sparkmoe.experts.GradientCheck.gaussian;

/**
 * What MLA shows its projections' inputs as: the forward is unchanged by the probe, and each site holds what its
 * weight reads, checked against values computed here (q_a, kv_a and o read the input and merged heads; q_b and
 * kv_b the normed latents; per head, k_b reads q_nope and v_b the attention over the normed kv latents, which at a
 * sequence's first token is that token's latent for every head).
 */
class LinearInputsTest {
    private static final int B = 2;
    private static final int S = 4;
    private static final int D = 6;
    private static final int H = 3;
    private static final int NOPE = 4;
    private static final int ROPE = 2;
    private static final int VALUE = 3;
    private static final int LATENT = 5;
    private static final int Q_RANK = 4;

    @Test
    void latentAttentionShowsWhatEachProjectionReads() {
        Random rnd = new Random(5);
        DataType f = DataType.FLOAT;
        LatentAttention.Weights w = new LatentAttention.Weights(null, gaussian(rnd, f, 0.6, Q_RANK, D), null,
                new RmsNorm(gaussian(rnd, f, 0.3, Q_RANK).addi(1.0), 1e-6), gaussian(rnd, f, 0.6, H * (NOPE + ROPE), Q_RANK),
                gaussian(rnd, f, 0.6, LATENT + ROPE, D), null, new RmsNorm(gaussian(rnd, f, 0.3, LATENT).addi(1.0), 1e-6),
                gaussian(rnd, f, 0.6, H * (NOPE + VALUE), LATENT), gaussian(rnd, f, 0.6, D, H * VALUE), null);
        LatentAttention attn = new LatentAttention(w, H, NOPE, ROPE, VALUE, 1.0 / Math.sqrt(NOPE + ROPE));
        RotaryEmbedding rope = new RotaryEmbedding(ROPE, 3.0, 16);
        INDArray x = gaussian(rnd, f, 1.0, B * S, D);
        Map<LinearInputs.Site, INDArray> seen = new EnumMap<>(LinearInputs.Site.class);
        INDArray probed = attn.forward(x, B, S, rope, (site, rows) -> seen.put(site, rows.dup()));
        assertArrayEquals(attn.forward(x, B, S, rope).data().asFloat(), probed.data().asFloat(), "same forward");

        assertEquals(java.util.EnumSet.range(LinearInputs.Site.ATTN_IN, LinearInputs.Site.ATTN_OUT), seen.keySet());
        assertEquals(x, seen.get(LinearInputs.Site.ATTN_IN));
        INDArray qLatent = w.qANorm().forward(Dense.linear(x, w.wqA()));                              // [T, Q]
        assertEquals(qLatent, seen.get(LinearInputs.Site.ATTN_Q_LATENT));
        INDArray kvLatent = w.kvANorm().forward(Dense.linear(x, w.wkvA()).get(
                org.nd4j.linalg.indexing.NDArrayIndex.all(),
                org.nd4j.linalg.indexing.NDArrayIndex.interval(0, LATENT)).dup());                    // [T, C]
        assertEquals(kvLatent, seen.get(LinearInputs.Site.ATTN_KV_LATENT));
        float[] q = Dense.linear(qLatent, w.wqB()).data().asFloat();                                   // [T, H·(dn+dr)]
        float[] nope = seen.get(LinearInputs.Site.ATTN_Q_NOPE).data().asFloat();                       // [T, H·dn]
        assertEquals(B * S * H * NOPE, nope.length);
        for (int t = 0; t < B * S; t++) {
            for (int h = 0; h < H; h++) {
                for (int i = 0; i < NOPE; i++) {
                    assertEquals(q[(t * H + h) * (NOPE + ROPE) + i], nope[(t * H + h) * NOPE + i], "q_nope");
                }
            }
        }
        float[] v = seen.get(LinearInputs.Site.ATTN_V_LATENT).data().asFloat();                       // [T, H·C]
        float[] latent = kvLatent.data().asFloat();
        for (int b = 0; b < B; b++) {
            int first = b * S;                                                       // attends to itself alone
            for (int h = 0; h < H; h++) {
                for (int c = 0; c < LATENT; c++) {
                    assertEquals(latent[first * LATENT + c], v[(first * H + h) * LATENT + c], 1e-6, "v latent");
                }
            }
        }
        assertArrayEquals(new long[] {B * S, H * VALUE}, seen.get(LinearInputs.Site.ATTN_OUT).shape());
    }
}
