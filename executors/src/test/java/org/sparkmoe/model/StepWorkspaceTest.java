package org.sparkmoe.model;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.kernels.StepWorkspace;
import org.sparkmoe.train.TinyModels;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The eval forward runs each decoder layer and each block of logits in the thread's step workspace
 * ({@link org.sparkmoe.kernels.StepWorkspace}): the same bits as the forward without it, and only what a step keeps
 * outlives it.
 */
class StepWorkspaceTest {
    private static final int[][] FIRST = {{1, 17, 300, 5, 900, 42}, {7, 8, 9, 10, 11, 12}};
    private static final int[][] SECOND = {{3, 4, 5, 6, 7, 8}, {900, 800, 700, 600, 500, 400}};

    private static MoeTransformer tiny() {
        return ModelFolder.load(TinyModels.folder(TinyModels.MIXTRAL), new Configuration());
    }

    @Test
    void theFinalHiddenOutlivesLaterStepsAndNoStepIsLeftOpen() {
        MoeTransformer model = tiny();
        INDArray first = model.finalHidden(FIRST, 2);
        float[] firstValues = Flat.floats(first);
        assertTrue(Nd4j.getWorkspaceManager().checkIfWorkspaceExists("sparkmoe-step"), "the layers ran in the "
                + "step workspace");
        assertTrue(Nd4j.getWorkspaceManager().getWorkspaceForCurrentThread("sparkmoe-step").getCurrentSize() > 0,
                "the workspace learned its size in the first steps");
        INDArray second = model.finalHidden(SECOND, 2);     // the same workspace memory, rewound
        assertFalse(first.isAttached());
        assertFalse(second.isAttached());
        assertFalse(Nd4j.getWorkspaceManager().anyWorkspaceActiveForCurrentThread());
        assertArrayEquals(firstValues, Flat.floats(first), 0f, "a later step overwrote a kept output");
    }

    @Test
    void theSameBitsAsTheForwardWithoutIt() {
        MoeTransformer model = tiny();
        for (int[][] tokens : new int[][][] {FIRST, SECOND}) {
            float[] expected = Flat.floats(model.forward(tokens, 2, false).logits());     // no workspace
            assertArrayEquals(expected, Flat.floats(model.lmHead(model.finalHidden(tokens, 2))), 0f);
            double[] nll = Perplexity.windowNll(model, tokens, 2);
            float[] logits = expected;
            int vocab = model.ends().config().vocab_size;
            int seq = tokens[0].length;
            for (int b = 0; b < tokens.length; b++) {
                double sum = 0;
                for (int s = 0; s + 1 < seq; s++) {
                    int at = (b * seq + s) * vocab;
                    sum += org.sparkmoe.kernels.Softmax.logSumExp(logits, at, vocab, new double[vocab]) - logits[at + tokens[b][s + 1]];
                }
                assertEquals(sum, nll[b], 0.0, "window " + b);
            }
        }
    }

    /**
     * Calibration's pass shows each MoE layer's router input, logits, routed rows and output inside the layer's step:
     * the bits the whole forward captures (the routed rows: those the block computes again from that input, as a
     * layer-sequential calibration does), every MoE layer once and in order, and nothing left attached or open.
     */
    @Test
    void theMoeLayerPassShowsTheForwardsRouterInputsAndLogitsLayerByLayer() {
        MoeTransformer model = tiny();
        ForwardOutput captured = model.forward(FIRST, 2, true);                          // no workspace
        List<Integer> seen = new ArrayList<>();
        model.moeLayerPass(FIRST, 2, layer -> LinearInputs.NONE, (l, layer, block, input, logits, routed, output) -> {
            assertTrue(input.isAttached() && logits.isAttached() && routed.act().isAttached(),
                    "made in the layer's step");
            assertSame(model.layers().get(layer).moe(), block);
            assertArrayEquals(Flat.floats(captured.routerInputs().get(l)), Flat.floats(input), 0f, "input of " + l);
            assertArrayEquals(Flat.floats(captured.routerLogits().get(l)), Flat.floats(logits), 0f, "logits of " + l);
            FullExperts.RoutedRows again = ((FullExperts) block.experts()).routedRows(captured.routerInputs().get(l),
                    block.route(captured.routerInputs().get(l), 2));
            assertArrayEquals(again.routes().plan.tokenOfRow, routed.routes().plan.tokenOfRow, "rows of " + l);
            assertArrayEquals(Flat.floats(again.xs()), Flat.floats(routed.xs()), 0f, "xs of " + l);
            assertArrayEquals(Flat.floats(again.act()), Flat.floats(routed.act()), 0f, "act of " + l);
            assertArrayEquals(Flat.floats(again.ys()), Flat.floats(routed.ys()), 0f, "ys of " + l);
            if (layer + 1 < model.layers().size()) {    // the capture's last hidden state is the final norm's output
                assertArrayEquals(Flat.floats(captured.hiddenStates().get(layer + 1)), Flat.floats(output), 0f,
                        "output of " + layer);
            }
            seen.add(layer);
        });
        assertEquals(List.of(0, 1, 2, 3), seen, "the tiny Mixtral's four MoE layers");
        assertFalse(Nd4j.getWorkspaceManager().anyWorkspaceActiveForCurrentThread());
    }

    /** A task of training rounds frees its thread's pass workspace when it ends; without one it is a no-op. */
    @Test
    void releasePassFreesThisThreadsPassWorkspace() {
        StepWorkspace.releasePass();
        assertFalse(Nd4j.getWorkspaceManager().checkIfWorkspaceExists("sparkmoe-pass"));
        try (MemoryWorkspace pass = StepWorkspace.pass()) {
            Nd4j.create(DataType.FLOAT, 1024);
        }
        assertTrue(Nd4j.getWorkspaceManager().checkIfWorkspaceExists("sparkmoe-pass"));
        StepWorkspace.releasePass();
        assertFalse(Nd4j.getWorkspaceManager().checkIfWorkspaceExists("sparkmoe-pass"));
        try (MemoryWorkspace pass = StepWorkspace.pass()) {                               // usable again after
            assertTrue(Nd4j.create(DataType.FLOAT, 8).isAttached());
        }
        StepWorkspace.releasePass();
    }
}
