package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.eval.PerplexityReport;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.FusedExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ForwardOutput;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.sparkmoe.tests.ReferenceParity.*;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nd4j.linalg.indexing.NDArrayIndex.all;
import static org.nd4j.linalg.indexing.NDArrayIndex.interval;

/**
 * Our forward pass and eval on a tiny random gpt_oss and on its MXFP4 variant against transformers 5.17 itself
 * (float32, eager attention), and our MXFP4 dequantisation against transformers' bit for bit.
 *
 * <p>How the expected numbers were produced: {@code tests/src/test/resources/reference/make_gpt_oss_reference.py}
 * (transformers 5.17.0, torch CPU) builds the model with transformers, redraws its weights from a seeded generator
 * and rounds them to bf16 values, saves it with {@code save_pretrained} (float32, fused experts as gpt-oss stores
 * them: gate_up_proj [E, D, 2I] interleaved, with biases) and writes the logits, every hidden state (embeddings, after
 * layers 0..L-2, the final-normed output) and the raw router logits (with the router bias) on 3 × 16 random tokens and
 * the summed NLL of the test split of sysadmin.txt in windows of 64 tokens. gpt-oss-tiny: YaRN (factor 4, truncate
 * false), q/k/v/o biases, sinks ~ N(0, 0.5²), layer_types sliding/full/sliding with window 5 &lt; 16, 8 experts top 3,
 * router bias, expert biases, gate_up_proj ~ N(0, 0.6²) so that 2% of the gate values and 5% of the up values of
 * layer 0 are clamped.
 */
class GptOssParityTest {
    private static JavaSparkContext sc;

    @BeforeAll
    static void startSpark() {
        sc = SparkContexts.start("gpt-oss-parity-test", "local[2]");
    }

    @AfterAll
    static void stopSpark() {
        sc.stop();
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt-oss-tiny", "gpt-oss-tiny-mxfp4"})
    void logitsHiddenStatesAndRouterLogitsMatchTransformers(String name) {
        MoeTransformer model = load(folder(name));
        ModelConfig c = model.config();
        try (SafeTensorsFile ref = reference(name)) {
            ForwardOutput ours = model.forward(tokens(ref.readLongs("input_ids")), c.num_experts_per_tok, true);
            int t = BATCH * SEQ;
            assertClose(name + " logits", ref.readFloat("logits").reshape(t, c.vocab_size), ours.logits());
            assertEquals(c.num_hidden_layers + 1, ours.hiddenStates().size());
            for (int n = 0; n <= c.num_hidden_layers; n++) {
                assertClose(name + " hidden_states." + n, ref.readFloat("hidden_states." + n).reshape(t, c.hidden_size),
                        ours.hiddenStates().get(n));
            }
            assertEquals(c.num_hidden_layers, ours.routerLogits().size());
            for (int n = 0; n < c.num_hidden_layers; n++) {
                assertClose(name + " router_logits." + n, ref.readFloat("router_logits." + n), ours.routerLogits().get(n));
            }
            assertFalse(ref.has("router_logits." + c.num_hidden_layers), name + ": one router per layer");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt-oss-tiny", "gpt-oss-tiny-mxfp4"})
    void evalTestSplitPerplexityMatchesTransformers(String name) {
        try (SafeTensorsFile ref = reference(name)) {
            PerplexityReport report = eval(sc, folder(name));
            long tokens = ref.readLongs("ppl.tokens")[0];
            double nll = ref.readFloat("ppl.nll_sum").getDouble(0);
            PerplexityReport.Totals ours = report.all();
            assertEquals(tokens, ours.tokens(), name + ": scored tokens (the tokenizer and windows agree)");
            double delta = Math.abs(ours.nllSum() / ours.tokens() - nll / tokens);
            System.out.printf("%s: test perplexity ours %.6f, transformers %.6f, |Δ nll/token| %.3g%n", name,
                    Math.exp(ours.nllSum() / ours.tokens()), Math.exp(nll / tokens), delta);
            assertTrue(delta <= NLL_PER_TOKEN_TOLERANCE, name + ": |Δ nll/token| " + delta);
        }
    }

    /** Every expert matrix of layer 0, decoded from the stored blocks and scales, equals transformers' dequantisation. */
    @org.junit.jupiter.api.Test
    void mxfp4DequantisationIsTransformersBitForBit() {
        String name = "gpt-oss-tiny-mxfp4";
        org.apache.hadoop.fs.Path dir = new org.apache.hadoop.fs.Path(folder(name).toUri());
        ModelConfig c = ModelFolder.readConfig(dir, new Configuration());
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        try (Checkpoint checkpoint = Checkpoint.open(dir, new Configuration()); SafeTensorsFile ref = reference(name)) {
            TensorSource view = FusedExperts.perExpert(checkpoint, c);
            INDArray gateUp = ref.readFloat("dequant.gate_up_proj");      // [E, D, 2I] as transformers holds it
            INDArray down = ref.readFloat("dequant.down_proj");           // [E, I, D]
            int i = c.expert_intermediate_size;
            for (int e = 0; e < c.num_experts; e++) {
                INDArray g = gateUp.slice(e);                              // [D, 2I]
                assertArrayEquals(g.get(all(), interval(0, 2, 2 * i)).transpose().dup('c').data().asFloat(),
                        view.readFloat(layout.expert(0, e, Projection.GATE)).data().asFloat(), "gate of expert " + e);
                assertArrayEquals(g.get(all(), interval(1, 2, 2 * i)).transpose().dup('c').data().asFloat(),
                        view.readFloat(layout.expert(0, e, Projection.UP)).data().asFloat(), "up of expert " + e);
                assertArrayEquals(down.slice(e).transpose().dup('c').data().asFloat(),
                        view.readFloat(layout.expert(0, e, Projection.DOWN)).data().asFloat(), "down of expert " + e);
            }
            assertTrue(view instanceof FusedExperts f && f.isPacked(layout.expert(0, 0, Projection.GATE)),
                    "the experts are read packed");
        }
    }

}
