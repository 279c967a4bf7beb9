package org.sparkmoe.tests;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.driver.eval.EvalJob;
import org.sparkmoe.driver.eval.EvalPlan;
import org.sparkmoe.driver.eval.PerplexityReport;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.text.TextSplit;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What the parity tests against transformers' goldens share: the fixtures under
 * {@code tests/src/test/resources/reference} (a model folder NAME and its NAME-reference.safetensors, written by the
 * recipe next to them on BATCH × SEQ random tokens), the comparison and its tolerance, and the eval of the test split
 * of sysadmin.txt in windows of WINDOW tokens that the recipes also compute with transformers.
 */
final class ReferenceParity {
    /** Largest |Δ| of logits, hidden states and router logits. */
    static final double TOLERANCE = 2e-4;
    /** |Δ NLL per token| between our eval and transformers' on the same windows. */
    static final double NLL_PER_TOKEN_TOLERANCE = 1e-5;
    static final int BATCH = 3;
    static final int SEQ = 16;
    static final int WINDOW = 64;

    private ReferenceParity() {
    }

    static Path folder(String name) {
        return Fixtures.root().resolve("tests/src/test/resources/reference").resolve(name);
    }

    static SafeTensorsFile reference(String name) {
        return SafeTensorsFile.open(folder(name + "-reference.safetensors"));
    }

    static MoeTransformer load(Path dir) {
        return ModelFolder.load(new org.apache.hadoop.fs.Path(dir.toUri()), new Configuration());
    }

    /** eval of the test split of sysadmin.txt in windows of WINDOW tokens, chunks of 8 windows on 2 partitions. */
    static PerplexityReport eval(JavaSparkContext sc, Path model) {
        String data = Fixtures.corpus("sysadmin.txt").toUri().toString();
        ModelConfig c = ModelFolder.readConfig(new org.apache.hadoop.fs.Path(model.toUri()), new Configuration());
        return EvalJob.run(sc, new EvalPlan(model.toUri().toString(), List.of(data), TextSplit.TEST, WINDOW,
                c.num_experts_per_tok, 8, 2));
    }

    /** The reference's input_ids [BATCH·SEQ] as BATCH sequences. */
    static int[][] tokens(long[] ids) {
        assertEquals(BATCH * SEQ, ids.length, "input_ids length");
        int[][] out = new int[BATCH][SEQ];
        for (int b = 0; b < BATCH; b++) {
            for (int s = 0; s < SEQ; s++) {
                out[b][s] = (int) ids[b * SEQ + s];
            }
        }
        return out;
    }

    static void assertClose(String name, INDArray expected, INDArray actual) {
        assertArrayEquals(expected.shape(), actual.shape(), name + " shape");
        double maxDiff = expected.sub(actual).amaxNumber().doubleValue();
        System.out.printf("%s: max |Δ| = %.3g%n", name, maxDiff);
        assertTrue(maxDiff <= TOLERANCE, name + ": max |Δ| " + maxDiff + " > " + TOLERANCE);
    }
}
