package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.MoeTransformer;

/** A training step's arrays live in {@link StepWorkspace}: freed when the step ends, the gradients copied out. */
class StepWorkspaceTest {
    private static final LoraSpec ALL = new LoraSpec(EnumSet.allOf(Projection.class), 8, 16.0, true);

    @Test
    void theGradientsOutliveTheStepAndNoWorkspaceIsLeftOpen() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        TrainState state = TrainState.init(model, ALL, 3, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 2, 16, 5);
        TrainOptions opts = TrainOptions.defaults(ALL, new LrSchedule(1e-2, 0, 4), 7);
        TrainStep.Evaluation first = TrainStep.evaluate(model, state, windows, opts);
        assertFalse(Nd4j.getWorkspaceManager().anyWorkspaceActiveForCurrentThread(), "the step closed its workspace");
        assertFalse(Nd4j.getWorkspaceManager().checkIfWorkspaceExists("sparkmoe-train-step"), "and destroyed it");
        for (INDArray g : first.grads().values()) {
            assertFalse(g.isAttached(), "a gradient returned from the step lives outside its workspace");
        }
        // a second step reuses the same native memory for its own arrays: the first step's gradients keep their values
        Map<String, float[]> before = new java.util.LinkedHashMap<>();
        first.grads().forEach((k, g) -> before.put(k, g.data().asFloat()));
        TrainStep.Evaluation second = TrainStep.evaluate(model, state, windows, opts);
        assertEquals(first.loss(), second.loss(), 0.0, "same state and windows, same loss");
        for (String key : before.keySet()) {
            assertArrayEquals(before.get(key), first.grads().get(key).data().asFloat(), key);
            assertArrayEquals(before.get(key), second.grads().get(key).data().asFloat(), key);
        }
        assertTrue(first.grads().values().stream().anyMatch(g -> g.amaxNumber().doubleValue() > 0));
    }
}
