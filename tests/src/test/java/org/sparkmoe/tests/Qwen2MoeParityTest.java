package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Our forward pass on a tiny random qwen2_moe (3 layers, layer 1 dense via mlp_only_layers, 6 experts, top-2,
 * norm_topk_prob false, shared expert with sigmoid gate, q/k/v biases, rope_theta at the top level) against
 * golden tensors on 3 × 16 tokens.
 *
 * <p>How the expected numbers were produced: there is no PyTorch here, so
 * {@code tests/src/test/resources/reference/make_qwen2_moe_reference.py} (run with plain
 * {@code python3}, NumPy only, seeded) writes the checkpoint and computes the forward pass in float32 with a
 * NumPy restatement of transformers 5's Qwen2-MoE modelling code, written from the transformers semantics and
 * independent of the Java code. The same NumPy forward, run as Mixtral ({@code --check-mixtral}) on the
 * transformers-produced fixture of {@link HuggingFaceParityTest}, matches transformers' logits to 2.6e-5 max
 * abs (hidden states 2.1e-5, router logits 4.9e-6). hidden_states follow transformers: embeddings, after layers
 * 0..L-2, then the final-normed output; router_logits are the raw gate logits [T, E] of the MoE layers only.
 */
class Qwen2MoeParityTest {
    private static final double LOGIT_TOLERANCE = 2e-4;
    /** Hidden states and router logits are held to the logits bound. */
    private static final double STATE_TOLERANCE = 2e-4;
    private static final int BATCH = 3;
    private static final int SEQ = 16;
    private static final int TOKENS = BATCH * SEQ;

    private static ForwardOutput ours;
    private static SafeTensorsFile reference;
    private static int[][] tokens;

    @BeforeAll
    static void runForward() throws Exception {
        MoeTransformer model = load(Fixtures.qwenTiny());
        reference = SafeTensorsFile.open(Fixtures.qwenTinyReference());
        tokens = tokens(reference.readLongs("input_ids"));
        ours = model.forward(tokens, model.config().num_experts_per_tok, true);
    }

    @Test
    void logitsMatchReference() {
        assertClose("logits", reference.readFloat("logits").reshape(TOKENS, 64), ours.logits(), LOGIT_TOLERANCE);
    }

    @Test
    void everyHiddenStateMatchesReference() {
        assertEquals(4, ours.hiddenStates().size());
        for (int n = 0; n < 4; n++) {
            assertClose("hidden_states." + n, reference.readFloat("hidden_states." + n).reshape(TOKENS, 32),
                    ours.hiddenStates().get(n), STATE_TOLERANCE);
        }
    }

    @Test
    void routerLogitsOfTheTwoMoeLayersMatchReference() {
        assertEquals(2, ours.routerLogits().size(), "router logits of layers 0 and 2 (layer 1 is dense)");
        for (int n = 0; n < 2; n++) {
            assertClose("router_logits." + n, reference.readFloat("router_logits." + n), ours.routerLogits().get(n),
                    STATE_TOLERANCE);
        }
    }

    @Test
    void normTopKProbRenormalisesTheExpertWeights(@TempDir Path dir) throws Exception {
        String config = Files.readString(Fixtures.qwenTiny().resolve("config.json"));
        String normed = config.replace("\"norm_topk_prob\": false", "\"norm_topk_prob\": true");
        assertTrue(!normed.equals(config), "config.json should hold \"norm_topk_prob\": false");
        Files.writeString(dir.resolve("config.json"), normed);
        Files.copy(Fixtures.qwenTiny().resolve("model.safetensors"), dir.resolve("model.safetensors"));
        MoeTransformer model = load(dir);
        try (SafeTensorsFile expected = SafeTensorsFile.open(Fixtures.qwenTinyNormTopKReference())) {
            assertArrayEquals(reference.readLongs("input_ids"), expected.readLongs("input_ids"));
            assertClose("logits (norm_topk_prob)", expected.readFloat("logits").reshape(TOKENS, 64),
                    model.logits(tokens), LOGIT_TOLERANCE);
        }
    }

    private static MoeTransformer load(Path dir) {
        return ModelFolder.load(new org.apache.hadoop.fs.Path(dir.toUri()), new Configuration());
    }

    private static int[][] tokens(long[] ids) {
        assertEquals(TOKENS, ids.length, "input_ids length");
        int[][] out = new int[BATCH][SEQ];
        for (int b = 0; b < BATCH; b++) {
            for (int s = 0; s < SEQ; s++) {
                out[b][s] = (int) ids[b * SEQ + s];
            }
        }
        return out;
    }

    private static void assertClose(String name, INDArray expected, INDArray actual, double tolerance) {
        assertArrayEquals(expected.shape(), actual.shape(), name + " shape");
        double maxDiff = expected.sub(actual).amaxNumber().doubleValue();
        System.out.printf("%s: max |Δ| = %.3g%n", name, maxDiff);
        assertTrue(maxDiff <= tolerance, name + ": max |Δ| " + maxDiff + " > " + tolerance);
    }
}
