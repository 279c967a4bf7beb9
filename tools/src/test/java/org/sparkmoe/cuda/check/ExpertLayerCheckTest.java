package org.sparkmoe.cuda.check;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.sparkmoe.cuda.Bf16;
import org.sparkmoe.cuda.ReferenceExpertLayer;
import org.sparkmoe.cuda.ResidentExpertLayer;

/**
 * {@link ExpertLayerCheck} without a GPU: a layer made from the bf16 bytes it hands out passes, and one with the
 * wrong LoRA scale is caught (so the check on the GPU machine can fail).
 */
class ExpertLayerCheckTest {
    private static final List<ExpertLayerCheck.Shape> SHAPES = List.of(
            new ExpertLayerCheck.Shape("a", 20, 16, 24, 4, 2, 8), new ExpertLayerCheck.Shape("b", 9, 8, 16, 3, 1, 16));

    @Test
    void aLayerOfTheSameWeightsPasses() {
        assertEquals(List.of(), ExpertLayerCheck.check(SHAPES, 3, (s, scale, w) -> fromBytes(s, scale, w)));
    }

    @Test
    void aWrongScaleFails() {
        List<String> failures = ExpertLayerCheck.check(SHAPES, 3, (s, scale, w) -> fromBytes(s, scale / 2, w));
        assertTrue(failures.stream().anyMatch(f -> f.startsWith("a pass 0 out")), failures.toString());
    }

    /** A float64 layer over the weights as {@link ResidentExpertLayer#upload} would read them. */
    private static ReferenceExpertLayer fromBytes(ExpertLayerCheck.Shape s, float scale,
                                                  ResidentExpertLayer.Weights w) {
        return new ReferenceExpertLayer(s.experts(), s.hidden(), s.intermediate(), s.rank(), scale,
                widen(w, ResidentExpertLayer.GATE, s), widen(w, ResidentExpertLayer.UP, s),
                widen(w, ResidentExpertLayer.DOWN, s));
    }

    private static float[] widen(ResidentExpertLayer.Weights w, int projection, ExpertLayerCheck.Shape s) {
        int n = s.hidden() * s.intermediate();
        float[] all = new float[s.experts() * n];
        for (int e = 0; e < s.experts(); e++) {
            ByteBuffer b = w.bf16(projection, e);
            assertEquals(2 * n, b.capacity());
            Bf16.widen(b, FloatBuffer.wrap(all, e * n, n).slice(), n);
        }
        return all;
    }
}
