package org.sparkmoe.driver;

import org.junit.jupiter.api.Test;
import org.sparkmoe.driver.calib.CalibratePlan;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.train.TrainPlan;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.text.TextSplit;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Every plan checks its values in its constructor, with one line naming the flag, expected and found. */
class PlanValidationTest {
    private static final List<String> DATA = List.of("file:/d/a.txt");

    private static String fails(Runnable r) {
        return assertThrows(IllegalArgumentException.class, r::run).getMessage();
    }

    @Test
    void evalPlan() {
        assertEquals("--window must be ≥ 2, got 1",
                fails(() -> new EvalPlan("file:/m", DATA, TextSplit.TEST, 1, 2, 8, 1, null, Device.CPU)));
        assertEquals("--partitions must be ≥ 1, got 0",
                fails(() -> new EvalPlan("file:/m", DATA, TextSplit.TEST, 32, 2, 8, 0, null, Device.CPU)));
        assertEquals("--top-k must be ≥ 0, got -1",
                fails(() -> new EvalPlan("file:/m", DATA, TextSplit.TEST, 32, -1, 8, 1, null, Device.CPU)));
        assertEquals(0, new EvalPlan("file:/m", DATA, TextSplit.TEST, 32, 0, 8, 1, null, Device.CPU).topK(),
                "a dense model (mistral) is scored with no experts per token");
        assertEquals("--batch-windows must be ≥ 1, got 0",
                fails(() -> new EvalPlan("file:/m", DATA, TextSplit.TEST, 32, 2, 0, 1, null, Device.CPU)));
        assertEquals("--data must name at least one text file, got none",
                fails(() -> new EvalPlan("file:/m", List.of(), TextSplit.TEST, 32, 2, 8, 1, null, Device.CPU)));
        assertEquals("--device must be given, got none",
                fails(() -> new EvalPlan("file:/m", DATA, TextSplit.TEST, 32, 2, 8, 1, null, null)));
    }

    @Test
    void calibratePlan() {
        assertEquals("--window must be ≥ 2, got 1", fails(() -> new CalibratePlan("file:/m", DATA, TextSplit.VALID,
                1, 0, 2, 8, 1, false, null, Device.CPU)));
        assertEquals("--max-tokens-per-file must be ≥ --window (32), got 10", fails(() -> new CalibratePlan("file:/m",
                DATA, TextSplit.VALID, 32, 10, 2, 8, 1, false, null, Device.CPU)));
        assertEquals("--partitions must be ≥ 1, got 0", fails(() -> new CalibratePlan("file:/m", DATA,
                TextSplit.VALID, 32, 0, 2, 8, 0, false, null, Device.CPU)));
        assertEquals("--data must name at least one text file, got none", fails(() -> new CalibratePlan("file:/m",
                List.of(), TextSplit.VALID, 32, 0, 2, 8, 1, false, null, Device.CPU)));
    }

    @Test
    void trainPlanGroups() {
        assertEquals("--window must be ≥ 2, got 1", fails(() -> new TrainPlan.Windows(DATA, TextSplit.TRAIN, 1, 2)));
        assertEquals("--averaging-frequency must be ≥ 1, got 0", fails(() -> new TrainPlan.Rounds(6, 0, 2, 1)));
        assertEquals("--targets must name at least one of w1, w2, w3",
                fails(() -> TrainPlan.lora(List.of(), 4, 8, false, false)));
        assertEquals("--warmup must be in [0, --steps 6], got 7", fails(() -> TrainPlan.options(
                TrainPlan.lora(List.of(Projection.GATE), 4, 8, false, false), 1e-3, 7, 6, 0, 1.0, null, 42)));
    }

    @Test
    void theTrainPlanIsBuiltOnceAndKeepsItsGroups() {
        TrainPlan plan = new TrainPlan("file:/m", DATA, TextSplit.TRAIN, 32, 2, 6, 2, 2, "file:/out", 1, false,
                List.of(Projection.GATE, Projection.DOWN), 4, 8, false, 1e-3, 0, 0, 1.0, null, 42);
        assertEquals(3, plan.roundCount());
        assertEquals(plan.options(), plan.withPartitions(4).options());
        assertEquals(4, plan.withPartitions(4).partitions());
        assertEquals(Device.CUDA, plan.withDevice(Device.CUDA).device());
    }
}
