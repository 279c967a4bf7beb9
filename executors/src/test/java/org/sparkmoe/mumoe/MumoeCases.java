package org.sparkmoe.mumoe;

import java.util.Random;
import java.util.function.Function;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * The small layers the μMoE tests share: flat and hierarchical CP and TR, each fast or naive, from one seed.
 */
enum MumoeCases {
    /** N = 6 experts, R = 3. */
    CP(type -> CpWeights.random(new Random(11), type, 5, 4, 3, 6)),
    /** N = [3, 4] experts (12 in all), R = 3. */
    CP_HIERARCHICAL(type -> CpWeights.random(new Random(12), type, 5, 4, 3, 3, 4)),
    /** N = 5 experts, ranks (2, 3, 2). */
    TR(type -> TrWeights.random(new Random(13), type, 5, 4, new long[] {5}, 2, 3, 2)),
    /** N = [3, 4] experts (12 in all), ranks (2, 3, 4, 2): a ring of cores A_N1, A_N2, A_I, A_O. */
    TR_HIERARCHICAL(type -> TrWeights.random(new Random(14), type, 5, 4, new long[] {3, 4}, 2, 3, 4, 2));

    static final int T = 3;
    static final int I = 5;
    static final int O = 4;

    private final Function<DataType, Object> weights;

    MumoeCases(Function<DataType, Object> weights) {
        this.weights = weights;
    }

    /** A fresh weight set of {@code type} (same numbers for both types, up to float32 rounding). */
    Object weights(DataType type) {
        return weights.apply(type);
    }

    MumoeLayer fast(Object w) {
        return fast(w, GateActivation.SOFTMAX);
    }

    MumoeLayer naive(Object w) {
        return naive(w, GateActivation.SOFTMAX);
    }

    MumoeLayer fast(Object w, GateActivation gate) {
        return w instanceof CpWeights cp ? new CpMumoe(cp, gate) : new TrMumoe((TrWeights) w, gate);
    }

    MumoeLayer naive(Object w, GateActivation gate) {
        return w instanceof CpWeights cp ? new CpMumoeNaive(cp, gate) : new TrMumoeNaive((TrWeights) w, gate);
    }
}
