package org.sparkmoe.mumoe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.experts.GradientCheck;

/**
 * Factorised == materialised: the batched CP/TR layers against the naive references that build W [N, I, O]
 * explicitly (in float64 loops), for y, the gates and every gradient. Error = max |fast − naive| / max |naive|.
 * float64: ≤ 1e-12 (measured ~1e-16). float32 layers against the float64 reference run on the same (float32)
 * weights: ≤ 1e-5, a few float32 ulps of accumulated rounding.
 */
class MumoeParityTest {
    static double relative(INDArray fast, INDArray naive) {
        INDArray f = fast.castTo(DataType.DOUBLE);
        INDArray n = naive.castTo(DataType.DOUBLE);
        assertArrayEquals(n.shape(), f.shape());
        double scale = n.amaxNumber().doubleValue();
        assertTrue(scale > 1e-3, "the reference is (near) zero; the comparison would prove nothing");
        return f.sub(n).amaxNumber().doubleValue() / scale;
    }

    @ParameterizedTest
    @EnumSource(MumoeCases.class)
    void float64FactorisedEqualsMaterialised(MumoeCases c) {
        check(c, GateActivation.SOFTMAX, DataType.DOUBLE, 1e-12);
    }

    @ParameterizedTest
    @EnumSource(MumoeCases.class)
    void float32FactorisedEqualsMaterialised(MumoeCases c) {
        check(c, GateActivation.SOFTMAX, DataType.FLOAT, 1e-5);
    }

    /** The same with entmax-1.5 gates (the naive reference runs {@link Entmax15}'s rows in its own loops). */
    @ParameterizedTest
    @EnumSource(MumoeCases.class)
    void entmaxGatedFactorisedEqualsMaterialised(MumoeCases c) {
        check(c, GateActivation.ENTMAX15, DataType.DOUBLE, 1e-12);
        check(c, GateActivation.ENTMAX15, DataType.FLOAT, 1e-5);
    }

    private static void check(MumoeCases c, GateActivation gate, DataType type, double tolerance) {
        Object w = c.weights(type);
        MumoeLayer fast = c.fast(w, gate);
        MumoeLayer naive = c.naive(w, gate);
        INDArray x = GradientCheck.gaussian(new Random(21), type, 1.0, MumoeCases.T, MumoeCases.I);
        INDArray dy = GradientCheck.gaussian(new Random(22), type, 1.0, MumoeCases.T, MumoeCases.O);

        MumoePass pf = fast.forward(x);
        MumoePass pn = naive.forward(x);
        assertEquals(type, pf.y().dataType());
        double worst = relative(pf.y(), pn.y());
        assertTrue(worst <= tolerance, c + " " + type + " y: " + worst);
        assertEquals(pn.gates().size(), pf.gates().size());
        for (int l = 0; l < pf.gates().size(); l++) {
            double e = relative(pf.gates().get(l), pn.gates().get(l));
            assertTrue(e <= tolerance, c + " gate " + l + ": " + e);
        }

        MumoeGradients gf = fast.backward(pf, dy);
        MumoeGradients gn = naive.backward(pn, dy);
        assertEquals(fast.weights().parameters().keySet(), gf.parameters().keySet());
        assertEquals(gn.parameters().keySet(), gf.parameters().keySet());
        for (Map.Entry<String, INDArray> e : gf.parameters().entrySet()) {
            assertArrayEquals(fast.weights().parameters().get(e.getKey()).shape(), e.getValue().shape(), e.getKey());
            double err = relative(e.getValue(), gn.parameters().get(e.getKey()));
            assertTrue(err <= tolerance, c + " " + type + " d" + e.getKey() + ": " + err);
            worst = Math.max(worst, err);
        }
        double dx = relative(gf.dx(), gn.dx());
        assertTrue(dx <= tolerance, c + " " + type + " dx: " + dx);
        worst = Math.max(worst, dx);
        System.out.printf("μMoE parity %-16s %-6s worst relative error %.2e%n", c, type, worst);
    }
}
