package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Our forward pass against transformers 5.17 on the fixture: MixtralForCausalLM in float32 with eager
 * attention, {@code model(input_ids, output_hidden_states=True, output_router_logits=True)} on 12 × 64
 * tokens, saved as the reference safetensors. Logits within 2e-4 absolute (docs/numerics.md).
 */
class HuggingFaceParityTest {
    private static final double LOGIT_TOLERANCE = 2e-4;
    /** Hidden states and router logits are held to the logits bound. */
    private static final double STATE_TOLERANCE = 2e-4;

    private static ForwardOutput ours;
    private static SafeTensorsFile reference;

    @BeforeAll
    static void runForward() throws Exception {
        MoeTransformer model = ModelFolder.load(new org.apache.hadoop.fs.Path(Fixtures.tinyModel().toUri()),
                new Configuration());
        reference = SafeTensorsFile.open(Fixtures.reference());
        long[] ids = reference.readLongs("input_ids");
        int[][] tokens = new int[12][64];
        for (int b = 0; b < 12; b++) {
            for (int s = 0; s < 64; s++) {
                tokens[b][s] = (int) ids[b * 64 + s];
            }
        }
        ours = model.forward(tokens, model.config().num_experts_per_tok, true);
    }

    @Test
    void logitsMatchTransformers() {
        assertClose("logits", reference.readFloat("logits").reshape(768, 1024), ours.logits(), LOGIT_TOLERANCE);
    }

    @Test
    void everyHiddenStateMatchesTransformers() {
        assertEquals(5, ours.hiddenStates().size());
        for (int n = 0; n < 5; n++) {
            assertClose("hidden_states." + n, reference.readFloat("hidden_states." + n).reshape(768, 128),
                    ours.hiddenStates().get(n), STATE_TOLERANCE);
        }
    }

    @Test
    void everyRouterLogitMatchesTransformers() {
        assertEquals(4, ours.routerLogits().size());
        for (int n = 0; n < 4; n++) {
            assertClose("router_logits." + n, reference.readFloat("router_logits." + n), ours.routerLogits().get(n),
                    STATE_TOLERANCE);
        }
    }

    private static void assertClose(String name, INDArray expected, INDArray actual, double tolerance) {
        assertArrayEquals(expected.shape(), actual.shape(), name + " shape");
        double maxDiff = expected.sub(actual).amaxNumber().doubleValue();
        System.out.printf("%s: max |Δ| = %.3g%n", name, maxDiff);
        assertTrue(maxDiff <= tolerance, name + ": max |Δ| " + maxDiff + " > " + tolerance);
    }
}
