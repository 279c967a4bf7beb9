package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.EnumSet;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.moe.MoeBlock;

/**
 * The training forward with a freshly initialised state (every LoRA B zero, the router a copy of the model's)
 * reproduces {@link MoeTransformer#forward}'s float32 logits and router logits bit for bit, on the tiny Mixtral and
 * the tiny Qwen2-MoE (shared experts, q/k/v biases, a dense mlp_only layer), the tiny Qwen3-MoE and the tiny OLMoE.
 */
class TrainForwardParityTest {

    @Test
    void freshMixtralStateReproducesTheFrozenLogitsExactly() {
        check(TinyModels.MIXTRAL, true);
        check(TinyModels.MIXTRAL, false);
    }

    @Test
    void freshQwenStateReproducesTheFrozenLogitsExactly() {
        check(TinyModels.QWEN, true);
    }

    @Test
    void freshQwen3MoeAndOlmoeStatesReproduceTheFrozenLogitsExactly() {
        check(TinyModels.QWEN3, true);
        check(TinyModels.OLMOE, false);
    }

    @Test
    void freshDeepSeekStatesReproduceTheFrozenLogitsExactly() {
        check(TinyModels.DEEPSEEK_V2, true);
        check(TinyModels.DEEPSEEK_V3_FP8, true);
    }

    private static void check(String dir, boolean trainRouter) {
        MoeTransformer model = TinyModels.load(dir, DataType.FLOAT);
        LoraSpec spec = new LoraSpec(EnumSet.allOf(Projection.class), 4, 8.0, trainRouter);
        TrainState state = TrainState.init(model, spec, 11, DataType.FLOAT);
        int[][] windows = TinyModels.windows(model, 2, 16, 12);
        ForwardOutput expected = model.forward(windows, model.config().num_experts_per_tok, true);
        TrainOptions opts = TrainOptions.defaults(spec, new LrSchedule(1e-3, 0, 10), 13);
        List<MoeBlock> blocks = TrainStep.blocks(model, state, spec);
        MoeTransformer.TrainingContext actual = model.forwardTraining(windows, blocks, opts.seed());
        assertArrayEquals(expected.logits().data().asFloat(), model.lmHead(actual.finalHidden()).data().asFloat(),
                dir + " logits");
        assertEquals(expected.routerLogits().size(), actual.routerLogits().size());
        for (int i = 0; i < actual.routerLogits().size(); i++) {
            INDArray e = expected.routerLogits().get(i);
            assertArrayEquals(e.data().asFloat(), actual.routerLogits().get(i).data().asFloat(), dir + " router " + i);
        }
    }
}
