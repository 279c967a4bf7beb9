package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.MoeTransformer;

/** {@link TrainStep} on the tiny Mixtral in float32: learning, determinism, reporting, and the state's layout. */
class TrainStepTest {
    private static final LoraSpec ALL = new LoraSpec(EnumSet.allOf(Projection.class), 8, 16.0, true);

    @Test
    void fewStepsOnAShortSequenceReduceTheLoss() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        TrainState state = TrainState.init(model, ALL, 1, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 2, 16, 2);
        LrSchedule schedule = new LrSchedule(1e-2, 1, 8);
        TrainOptions opts = TrainOptions.defaults(ALL, schedule, 3);
        StepResult first = TrainStep.run(model, state, windows, opts);
        assertEquals(0.0, first.lr(), 0.0, "warmup: the first update has rate 0");
        StepResult last = first;
        for (int i = 1; i < 6; i++) {
            last = TrainStep.run(model, state, windows, opts);
            assertEquals(schedule.at(i), last.lr(), 0.0);
        }
        assertEquals(6, state.step());
        assertEquals(32, last.tokens());
        assertEquals(30, last.scored());
        double coef = model.config().router_aux_loss_coef;
        assertEquals(last.ceLoss() + coef * last.auxLoss(), last.loss(), 1e-12);
        assertTrue(last.ceLoss() < first.ceLoss() - 0.1, "cross-entropy " + first.ceLoss() + " → " + last.ceLoss());
        assertTrue(first.gradNorm() > 0 && last.gradNorm() > 0);
    }

    @Test
    void sameInputsGiveTheSameBits() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 2, 16, 4);
        TrainOptions opts = TrainOptions.defaults(ALL, new LrSchedule(1e-2, 0, 4), 5).withMaxGradNorm(0.5);
        TrainState a = TrainState.init(model, ALL, 6, DataType.FLOAT);
        TrainState b = TrainState.init(model, ALL, 6, DataType.FLOAT);
        for (int i = 0; i < 2; i++) {
            assertEquals(TrainStep.run(model, a, windows, opts), TrainStep.run(model, b, windows, opts));
        }
        for (List<? extends Map<String, INDArray>> pair : List.of(List.of(a.params(), b.params()), List.of(a.m(), b.m()),
                List.of(a.v(), b.v()))) {
            for (String key : pair.get(0).keySet()) {
                assertArrayEquals(pair.get(0).get(key).data().asFloat(), pair.get(1).get(key).data().asFloat(), key);
            }
        }
        INDArray router = a.params().get("model.layers.0.block_sparse_moe.gate.weight");
        assertFalse(router.equals(model.layers().get(0).moe().router().weight()), "a trained router moves");
    }

    @Test
    void aPassWorkspaceGivesTheSameBitsAndHandsOutOnlyDetachedGradients() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 2, 16, 7);
        int[][] other = TinyModels.windows(model, 2, 16, 8);
        TrainOptions fresh = TrainOptions.defaults(ALL, new LrSchedule(1e-2, 0, 4), 5);
        TrainOptions reused = fresh.withPassWorkspace(true);
        TrainState a = TrainState.init(model, ALL, 6, DataType.FLOAT);
        TrainState b = TrainState.init(model, ALL, 6, DataType.FLOAT);
        for (int i = 0; i < 3; i++) {      // the workspace learns its size in the first pass, reuses it after
            assertEquals(TrainStep.run(model, a, windows, fresh), TrainStep.run(model, b, windows, reused));
        }
        for (List<? extends Map<String, INDArray>> pair : List.of(List.of(a.params(), b.params()), List.of(a.m(), b.m()),
                List.of(a.v(), b.v()))) {
            for (String key : pair.get(0).keySet()) {
                assertArrayEquals(pair.get(0).get(key).data().asFloat(), pair.get(1).get(key).data().asFloat(), key);
            }
        }
        TrainStep.Evaluation expected = TrainStep.evaluate(model, a, windows, fresh);
        TrainStep.Evaluation kept = TrainStep.evaluate(model, b, windows, reused);
        TrainStep.evaluate(model, b, other, reused);                  // a later pass reuses the workspace's memory
        assertEquals(expected.loss(), kept.loss(), 0.0);
        for (String key : expected.grads().keySet()) {
            INDArray g = kept.grads().get(key);
            assertFalse(g.isAttached(), key + " left the workspace");
            assertArrayEquals(expected.grads().get(key).data().asFloat(), g.data().asFloat(), key);
        }
        assertThrows(IllegalArgumentException.class, () -> reused.withCheckpointActivations(true));
    }

    @Test
    void stateFollowsTheContractKeysOrderShapesAndInitialisation() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        LoraSpec spec = new LoraSpec(LoraSpec.parseTargets("w2,w1"), 4, 8.0, true);
        TrainState s = TrainState.init(model, spec, 9, DataType.FLOAT);
        String p = "model.layers.0.block_sparse_moe.";
        List<String> keys = List.copyOf(s.params().keySet());
        assertEquals(List.of(p + "experts.w1.lora_A", p + "experts.w1.lora_B", p + "experts.w2.lora_A",
                p + "experts.w2.lora_B", p + "gate.weight"), keys.subList(0, 5));
        assertEquals(4 * 5, keys.size());
        assertEquals(TrainState.keys(model, spec), keys);
        assertArrayEquals(new long[] {8, 4, 128}, s.params().get(p + "experts.w1.lora_A").shape());
        assertArrayEquals(new long[] {8, 256, 4}, s.params().get(p + "experts.w1.lora_B").shape());
        assertArrayEquals(new long[] {8, 4, 256}, s.params().get(p + "experts.w2.lora_A").shape());
        assertArrayEquals(new long[] {8, 128, 4}, s.params().get(p + "experts.w2.lora_B").shape());
        assertEquals(0.0, s.params().get(p + "experts.w2.lora_B").amaxNumber().doubleValue(), 0.0);
        double bound = s.params().get(p + "experts.w2.lora_A").amaxNumber().doubleValue();
        assertTrue(bound <= 1 / Math.sqrt(256) && bound > 0.9 / Math.sqrt(256), "Kaiming-uniform bound " + bound);
        assertEquals(model.layers().get(0).moe().router().weight(), s.params().get(p + "gate.weight"));
        assertEquals(0.0, s.m().get(p + "gate.weight").amaxNumber().doubleValue(), 0.0);

        TrainState same = TrainState.init(model, spec, 9, DataType.FLOAT);
        TrainState other = TrainState.init(model, spec, 10, DataType.FLOAT);
        INDArray a = s.params().get(p + "experts.w1.lora_A");
        assertEquals(a, same.params().get(p + "experts.w1.lora_A"), "same root seed, same bits");
        assertNotEquals(a, other.params().get(p + "experts.w1.lora_A"), "another root seed");
        assertNotEquals(a.slice(0), s.params().get("model.layers.1.block_sparse_moe.experts.w1.lora_A").slice(0),
                "layers draw from different streams");
    }

    @Test
    void qwenStateUsesItsNamesAndSkipsDenseLayers() {
        MoeTransformer model = TinyModels.load(TinyModels.QWEN, DataType.FLOAT);
        TrainState s = TrainState.init(model, new LoraSpec(LoraSpec.parseTargets("up_proj"), 2, 4.0, false), 1,
                DataType.FLOAT);
        assertEquals(List.of("model.layers.0.mlp.experts.up_proj.lora_A", "model.layers.0.mlp.experts.up_proj.lora_B",
                "model.layers.2.mlp.experts.up_proj.lora_A", "model.layers.2.mlp.experts.up_proj.lora_B"),
                List.copyOf(s.params().keySet()));
    }

    @Test
    void targetsAcceptBothNamingsAndRejectOthers() {
        assertEquals(EnumSet.of(Projection.GATE, Projection.DOWN), LoraSpec.parseTargets("gate_proj, w2,w1"));
        assertEquals(EnumSet.allOf(Projection.class), LoraSpec.parseTargets("up_proj,down_proj,gate_proj"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraSpec.parseTargets("w1,q_proj"));
        assertEquals("unknown LoRA target 'q_proj' in 'w1,q_proj': expected w1, w2, w3, gate_proj, up_proj or "
                + "down_proj", e.getMessage());
        IllegalArgumentException none = assertThrows(IllegalArgumentException.class,
                () -> new LoraSpec(EnumSet.noneOf(Projection.class), 4, 8, false));
        assertTrue(none.getMessage().contains("nothing to train"), none.getMessage());
    }

    @Test
    void aStateThatDoesNotMatchTheSpecIsRejectedByName() {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        TrainState loraOnly = TrainState.init(model, new LoraSpec(LoraSpec.parseTargets("w1"), 4, 8, false), 1);
        int[][] windows = TinyModels.windows(model, 1, 8, 2);
        TrainOptions opts = TrainOptions.defaults(ALL, new LrSchedule(1e-3, 0, 1), 3);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TrainStep.run(model, loraOnly, windows, opts));
        assertTrue(e.getMessage().startsWith("the training state has no tensor "
                + "model.layers.0.block_sparse_moe.experts.w3.lora_A, which the LoRA spec"), e.getMessage());
        TrainOptions fewer = TrainOptions.defaults(new LoraSpec(LoraSpec.parseTargets("w1"), 4, 8, false),
                new LrSchedule(1e-3, 0, 1), 3);
        TrainState full = TrainState.init(model, ALL, 1);
        IllegalArgumentException extra = assertThrows(IllegalArgumentException.class,
                () -> TrainStep.run(model, full, windows, fewer));
        assertTrue(extra.getMessage().startsWith("the training state holds "
                + "model.layers.0.block_sparse_moe.experts.w3.lora_A, which the LoRA spec"), extra.getMessage());
        assertEquals(0, loraOnly.step(), "nothing was updated");
    }

    /** Spark runs several tasks of one executor on threads that share the cached model: no interference. */
    @Test
    void concurrentStepsOnASharedModelGiveTheSequentialBits() throws Exception {
        MoeTransformer model = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        TrainOptions opts = TrainOptions.defaults(ALL, new LrSchedule(1e-2, 0, 4), 5);
        int[][][] data = {TinyModels.windows(model, 2, 16, 20), TinyModels.windows(model, 2, 16, 21)};
        TrainState[] sequential = new TrainState[2];
        for (int i = 0; i < 2; i++) {
            sequential[i] = TrainState.init(model, ALL, 30 + i);
            TrainStep.run(model, sequential[i], data[i], opts);
        }
        TrainState[] parallel = new TrainState[2];
        Thread[] threads = new Thread[2];
        Throwable[] failures = new Throwable[2];
        for (int i = 0; i < 2; i++) {
            int n = i;
            parallel[n] = TrainState.init(model, ALL, 30 + n);
            threads[n] = new Thread(() -> TrainStep.run(model, parallel[n], data[n], opts));
            threads[n].setUncaughtExceptionHandler((t, e) -> failures[n] = e);
            threads[n].start();
        }
        for (int i = 0; i < 2; i++) {
            threads[i].join();
            assertNull(failures[i], "thread " + i);
            for (String key : sequential[i].params().keySet()) {
                assertArrayEquals(sequential[i].params().get(key).data().asFloat(),
                        parallel[i].params().get(key).data().asFloat(), key);
            }
        }
    }
}
