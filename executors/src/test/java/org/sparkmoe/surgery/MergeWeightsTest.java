package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelSchema;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class MergeWeightsTest {
    @Test
    void uniformAndSoftmaxOfMeanLogits() {
        assertArrayEquals(new double[] {0.25, 0.25, 0.25, 0.25}, MergeWeights.uniform(4), 0);
        // softmax(0, ln 2, ln 3) = (1, 2, 3) / 6
        assertArrayEquals(new double[] {1 / 6.0, 2 / 6.0, 3 / 6.0},
                MergeWeights.routerWeighted(new double[] {0, Math.log(2), Math.log(3)}, 1), 1e-15);
        // T = 2: softmax(0, ln 2) = (1, 2) / 3 from logits (0, 2 ln 2)
        assertArrayEquals(new double[] {1 / 3.0, 2 / 3.0},
                MergeWeights.routerWeighted(new double[] {0, 2 * Math.log(2)}, 2), 1e-15);
        // large logits do not overflow
        assertArrayEquals(new double[] {0.5, 0.5}, MergeWeights.routerWeighted(new double[] {1000, 1000}, 0.5), 0);
    }

    @Test
    void maskKeepsTheLargestAndRenormalises() {
        assertArrayEquals(new double[] {0, 4 / 7.0, 0, 3 / 7.0},
                MergeWeights.topKMask(new double[] {0.1, 0.4, 0.2, 0.3}, 2), 1e-15);
        // ties go to the lower index
        assertArrayEquals(new double[] {3 / 7.0, 0, 4 / 7.0}, MergeWeights.topKMask(new double[] {0.3, 0.3, 0.4}, 2), 1e-15);
        assertArrayEquals(new double[] {0.5, 0.5, 0}, MergeWeights.topKMask(new double[] {0.25, 0.25, 0.2}, 2), 0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> MergeWeights.topKMask(new double[] {1, 0}, 3));
        assertEquals("--top-k-mask must be in [1, 2], got 3", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> MergeWeights.routerWeighted(new double[] {1}, 0));
    }

    @Test
    void weightedSumOfAStack() {
        INDArray stack = Nd4j.create(new float[] {1, 2, 3, 4, 10, 20, 30, 40}, new long[] {2, 2, 2}, 'c');
        INDArray sum = ExpertStack.weightedSum(stack, new double[] {0.5, 0.25});
        assertArrayEquals(new float[] {3, 6, 9, 12}, sum.data().asFloat(), 0);
        assertEquals(DataType.FLOAT, sum.dataType());
    }

    /** Experts hold 10·e + p + 1 everywhere (layer 0), so the uniform mean of 4 experts is 15 + p + 1. */
    @Test
    void denseMergeWritesAMistralMlp() {
        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        double[][] w = {MergeWeights.uniform(4), MergeWeights.topKMask(new double[] {0.1, 0.4, 0.2, 0.3}, 2)};
        DenseMergeSurgery surgery = new DenseMergeSurgery(c, w);
        LayerResult r0 = surgery.apply(SurgeryFixtures.experts(c), 0, 0);
        assertEquals(16, r0.tensors().get(CheckpointLayout.denseMlp(0, Projection.GATE)).getDouble(0, 0), 1e-5);
        assertEquals(18, r0.tensors().get(CheckpointLayout.denseMlp(0, Projection.DOWN)).getDouble(2, 1), 1e-5);
        LayerResult r1 = surgery.apply(SurgeryFixtures.experts(c), 1, 1);
        // layer 1: experts 1 and 3 with 4/7 and 3/7: 100 + (10·4 + 30·3)/7 + 2 (up)
        assertEquals(102 + 130 / 7.0, r1.tensors().get(CheckpointLayout.denseMlp(1, Projection.UP)).getDouble(1, 2), 1e-4);
        ModelConfig dense = ModelConfig.parse(surgery.config(c).toString(), "new");
        assertEquals(ModelConfig.ModelType.MISTRAL, dense.modelType);
        assertEquals(0, dense.num_experts);
        assertEquals(SurgeryFixtures.I, dense.intermediate_size);
        assertFalse(surgery.config(c).has("num_local_experts"));
        assertEquals("MistralForCausalLM", surgery.config(c).get("architectures").get(0).asText());
        assertTrue(ModelSchema.expected(dense).containsKey(CheckpointLayout.denseMlp(1, Projection.DOWN)));
    }
}
