package org.sparkmoe.mumoe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/** Bad shapes and types fail with one line naming the tensor, what was expected and what was found. */
class MumoeShapesTest {
    private static void fails(String message, Executable e) {
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, e);
        assertEquals(message, ex.getMessage());
        assertEquals(-1, ex.getMessage().indexOf('\n'));
    }

    private static org.nd4j.linalg.api.ndarray.INDArray z(long... shape) {
        return Nd4j.zeros(DataType.DOUBLE, shape);
    }

    @Test
    void cpWeights() {
        fails("μMoE CP: expert factor 0 [N_0, R] has shape [6, 2], expected [6, 3]",
                () -> new CpWeights(List.of(z(5, 6)), List.of(z(6, 2)), z(5, 3), z(4, 3)));
        fails("μMoE CP: gate 1 [I, N_1] has shape [5, 3], expected [5, 4]",
                () -> new CpWeights(List.of(z(5, 3), z(5, 3)), List.of(z(3, 3), z(4, 3)), z(5, 3), z(4, 3)));
        fails("μMoE CP: output factor U(O) has shape [4, 2], expected [4, 3]",
                () -> new CpWeights(List.of(z(5, 6)), List.of(z(6, 3)), z(5, 3), z(4, 2)));
        fails("μMoE CP: expected one gate per expert level and at least one level, found 2 gates and 1 expert factors",
                () -> new CpWeights(List.of(z(5, 6), z(5, 6)), List.of(z(6, 3)), z(5, 3), z(4, 3)));
        fails("μMoE CP: gate 0 is FLOAT, expected DOUBLE like the other parameters",
                () -> new CpWeights(List.of(Nd4j.zeros(DataType.FLOAT, 5, 6)), List.of(z(6, 3)), z(5, 3), z(4, 3)));
    }

    @Test
    void trWeights() {
        fails("μMoE TR: core A_I [r2, I, r3] has shape [3, 5, 2], expected [4, 5, 2]",
                () -> new TrWeights(List.of(z(5, 6)), List.of(z(2, 6, 4)), z(3, 5, 2), z(2, 4, 2)));
        fails("μMoE TR: core A_O [r3, O, r1] has shape [2, 4, 3], expected [2, 4, 2]",
                () -> new TrWeights(List.of(z(5, 6)), List.of(z(2, 6, 3)), z(3, 5, 2), z(2, 4, 3)));
        fails("μMoE TR: gate [I, N] has shape [5, 7], expected [5, 6]",
                () -> new TrWeights(List.of(z(5, 7)), List.of(z(2, 6, 3)), z(3, 5, 2), z(2, 4, 2)));
    }

    @Test
    void hierarchicalTrWeights() {
        fails("μMoE TR: core A_N2 [r2, N_2, r3] has shape [4, 4, 2], expected [3, 4, 2]",
                () -> new TrWeights(List.of(z(5, 3), z(5, 4)), List.of(z(2, 3, 3), z(4, 4, 2)), z(2, 5, 3),
                        z(3, 4, 2)));
        fails("μMoE TR: core A_I [r3, I, r4] has shape [3, 5, 3], expected [2, 5, 3]",
                () -> new TrWeights(List.of(z(5, 3), z(5, 4)), List.of(z(2, 3, 3), z(3, 4, 2)), z(3, 5, 3),
                        z(3, 4, 2)));
        fails("μMoE TR: core A_O [r4, O, r1] has shape [3, 4, 3], expected [3, 4, 2]",
                () -> new TrWeights(List.of(z(5, 3), z(5, 4)), List.of(z(2, 3, 3), z(3, 4, 2)), z(2, 5, 3),
                        z(3, 4, 3)));
        fails("μMoE TR: gate 1 [I, N_2] has shape [5, 3], expected [5, 4]",
                () -> new TrWeights(List.of(z(5, 3), z(5, 3)), List.of(z(2, 3, 3), z(3, 4, 2)), z(2, 5, 3),
                        z(3, 4, 2)));
        fails("μMoE TR: expected one gate per expert level and at least one level, found 2 gates and 1 expert cores",
                () -> new TrWeights(List.of(z(5, 3), z(5, 4)), List.of(z(2, 3, 2)), z(2, 5, 3), z(3, 4, 2)));
    }

    @Test
    void inputsAndOutputGradients() {
        CpMumoe cp = new CpMumoe((CpWeights) MumoeCases.CP.weights(DataType.DOUBLE), GateActivation.SOFTMAX);
        fails("μMoE CP: x has shape [3, 4], expected [T, I] = [T ≥ 1, 5]", () -> cp.forward(z(3, 4)));
        fails("μMoE CP: x is FLOAT, expected DOUBLE like the other parameters",
                () -> cp.forward(Nd4j.zeros(DataType.FLOAT, 3, 5)));
        MumoePass pass = cp.forward(z(3, 5));
        fails("μMoE CP: dy has shape [3, 5], expected [3, 4]", () -> cp.backward(pass, z(3, 5)));
        TrMumoe tr = new TrMumoe((TrWeights) MumoeCases.TR.weights(DataType.DOUBLE), GateActivation.SOFTMAX);
        fails("μMoE TR: x has shape [0, 5], expected [T, I] = [T ≥ 1, 5]", () -> tr.forward(z(0, 5)));
        MumoePass trPass = tr.forward(z(2, 5));
        fails("μMoE TR: dy has shape [3, 4], expected [2, 4]", () -> tr.backward(trPass, z(3, 4)));
    }
}
