package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.MoeTransformer;

/**
 * Training with checkpointed activations (each layer's input kept, the layer recomputed in the backward) gives the
 * bits of training with every activation kept: losses, every gradient, the parameters and both moments after
 * several steps. On the tiny Mixtral (with and without router jitter, which the recomputation replays), the tiny
 * Qwen2-MoE (shared expert with its LoRA, a dense layer), the tiny gpt-oss (sinks, sliding-window layers, router
 * bias) and the tiny DeepSeek-V2 (MLA, two shared experts).
 */
class CheckpointActivationsTest {

    @Test
    void mixtralStepsAreBitIdentical() {
        check("mixtral", TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT), false);
    }

    @Test
    void jitteredRoutersReplayTheirNoiseInTheRecomputation() {
        MoeTransformer jittered = TinyModels.jitteredMixtral(0.1, DataType.FLOAT);
        MoeTransformer plain = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        LoraSpec spec = spec(plain, false);
        int[][] windows = TinyModels.windows(plain, 2, 16, 3);
        TrainOptions opts = TrainOptions.defaults(spec, new LrSchedule(1e-2, 0, 3), 5);
        double noisy = TrainStep.evaluate(jittered, TrainState.init(jittered, spec, 7, DataType.FLOAT), windows, opts)
                .loss();
        double clean = TrainStep.evaluate(plain, TrainState.init(plain, spec, 7, DataType.FLOAT), windows, opts).loss();
        assertNotEquals(clean, noisy, "the jitter changes the loss");
        check("mixtral with router jitter 0.1", jittered, false);
    }

    @Test
    void qwenWithSharedExpertLoraStepsAreBitIdentical() {
        check("qwen2-moe", TinyModels.load(TinyModels.QWEN, DataType.FLOAT), true);
    }

    @Test
    void gptOssWithSinksAndSlidingWindowsStepsAreBitIdentical() {
        check("gpt-oss", TinyModels.load(TinyModels.GPT_OSS, DataType.FLOAT), false);
    }

    @Test
    void deepSeekLatentAttentionStepsAreBitIdentical() {
        check("deepseek-v2", TinyModels.load(TinyModels.DEEPSEEK_V2, DataType.FLOAT), true);
    }

    private static LoraSpec spec(MoeTransformer model, boolean shared) {
        return new LoraSpec(EnumSet.allOf(Projection.class), 4, 8.0, true, shared);
    }

    /** Three steps each way from the same state, then the gradients at the trained state. */
    private static void check(String name, MoeTransformer model, boolean shared) {
        LoraSpec spec = spec(model, shared);
        TrainOptions kept = TrainOptions.defaults(spec, new LrSchedule(1e-2, 0, 3), 5);
        TrainOptions recomputed = kept.withCheckpointActivations(true);
        TrainState a = TrainState.init(model, spec, 7, DataType.FLOAT);
        TrainState b = TrainState.init(model, spec, 7, DataType.FLOAT);
        // windows longer than gpt-oss-tiny's sliding window, so that its windowed layers mask something
        for (int step = 0; step < 3; step++) {
            int[][] windows = TinyModels.windows(model, 2, 24, 40 + step);
            assertEquals(TrainStep.run(model, a, windows, kept), TrainStep.run(model, b, windows, recomputed),
                    name + " step " + step);
        }
        assertSameBits(name + " params", a.params(), b.params());
        assertSameBits(name + " m", a.m(), b.m());
        assertSameBits(name + " v", a.v(), b.v());
        int[][] windows = TinyModels.windows(model, 2, 24, 50);
        TrainStep.Evaluation e = TrainStep.evaluate(model, a, windows, kept);
        TrainStep.Evaluation f = TrainStep.evaluate(model, b, windows, recomputed);
        assertEquals(e.loss(), f.loss(), 0.0, name + " loss");
        assertSameBits(name + " gradients", e.grads(), f.grads());
    }

    private static void assertSameBits(String what, Map<String, INDArray> expected, Map<String, INDArray> actual) {
        assertEquals(List.copyOf(expected.keySet()), List.copyOf(actual.keySet()), what);
        for (String key : expected.keySet()) {
            assertArrayEquals(expected.get(key).data().asFloat(), actual.get(key).data().asFloat(), what + " " + key);
        }
    }
}
