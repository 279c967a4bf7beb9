package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.List;
import java.util.Random;
import java.util.function.DoubleSupplier;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.experts.LowRankAdapters;
import org.sparkmoe.experts.LowRankExperts;
import org.sparkmoe.model.MoeTransformer;

/**
 * Training a low-rank-expert model (the tiny Mixtral after {@code surgery lowrank}): the state starts from the
 * checkpoint's own stacked LoRA experts under their checkpoint keys, the whole-model gradients (low-rank-experts MoE
 * blocks, router and load-balancing loss included) match float64 central differences, and steps lower the loss.
 */
class LowRankTrainingTest {
    private static final int RANK = 4;

    private static LoraSpec spec(boolean router) {
        return new LoraSpec(EnumSet.allOf(Projection.class), RANK, RANK, router);
    }

    @Test
    void stateStartsFromTheCheckpointsExperts() {
        MoeTransformer model = TinyModels.lowRankMixtral(RANK, DataType.FLOAT);
        TrainState state = TrainState.init(model, spec(false), 1);
        CheckpointLayout layout = new CheckpointLayout(model.config().modelType);
        assertEquals(TrainState.keys(model, spec(false)), List.copyOf(state.params().keySet()));
        LowRankAdapters own = ((LowRankExperts) model.layers().get(2).moe().experts()).weights().adapters();
        assertEquals(own.a3, state.params().get(layout.stackedLoraA(2, Projection.UP)));
        assertEquals(own.b2, state.params().get(layout.stackedLoraB(2, Projection.DOWN)));
        assertTrue(own.b2.amaxNumber().doubleValue() > 0, "B from the SVD is not zero");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TrainState.init(model, new LoraSpec(EnumSet.allOf(Projection.class), RANK, 16, false), 1));
        assertEquals("a low-rank model (surgery lowrank, rank 4) trains its own LoRA experts: targets w1, w3, w2, "
                + "rank 4, alpha 4 (scale 1); got targets [GATE, UP, DOWN], rank 4, alpha 16.0", e.getMessage());
    }

    /** Every trainable tensor (A and B of every projection in every layer, every router): the top two and one random entry. */
    @Test
    void gradientsOfEveryLayerMatchFiniteDifferences() {
        MoeTransformer model = TinyModels.lowRankMixtral(RANK, DataType.DOUBLE);
        TrainState state = TrainState.init(model, spec(true), 31, DataType.DOUBLE);
        int[][] windows = TinyModels.windows(model, 2, 16, 32);
        TrainOptions opts = TrainOptions.defaults(spec(true), new LrSchedule(1e-3, 0, 10), 7).withAuxLossCoef(0.5);
        TrainStep.Evaluation e = TrainStep.evaluate(model, state, windows, opts);
        DoubleSupplier loss = () -> TrainStep.losses(model, state, windows, opts).loss();
        Random rnd = new Random(33);
        int checked = 0;
        for (String key : state.params().keySet()) {
            WholeModelGradientCheckTest.check("low-rank: " + key, state.params().get(key), e.grads().get(key), loss, rnd);
            checked++;
        }
        assertEquals(4 * 7, checked, "3 projections × (A, B) + router per MoE layer");
    }

    @Test
    void stepsLowerTheLoss() {
        MoeTransformer model = TinyModels.lowRankMixtral(RANK, DataType.FLOAT);
        TrainState state = TrainState.init(model, spec(false), 41);
        int[][] windows = TinyModels.windows(model, 2, 32, 42);
        TrainOptions opts = TrainOptions.defaults(spec(false), new LrSchedule(3e-3, 0, 10), 43);
        double before = TrainStep.losses(model, state, windows, opts).loss();
        for (int s = 0; s < 10; s++) {
            TrainStep.run(model, state, windows, opts);
        }
        double after = TrainStep.losses(model, state, windows, opts).loss();
        assertTrue(after < before - 0.05, "loss " + before + " → " + after);
        INDArray trained = state.params().get(new CheckpointLayout(model.config().modelType).stackedLoraB(0, Projection.GATE));
        assertTrue(!trained.equals(((LowRankExperts) model.layers().get(0).moe().experts()).weights().adapters().b1), "B moved");
    }
}
