package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelSchema;

import java.util.Arrays;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** merge-dense of the DeepSeek types: the shared experts and the merged routed expert folded into one dense MLP. */
class DenseMergeSurgeryTest {

    /**
     * deepseek_v2 (two shared experts, S = 2·I = 4) and deepseek_v3 (one, S = 2), intermediate_size 8: with uniform
     * weights over 8 experts whose elements are 100·l + 10·e + p + 1, the merged expert of layer 1 is 135 + p + 1;
     * gate/up [8, D] = [merged (I rows); shared (S rows); zeros], down [D, 8] = [c·merged, shared, zeros] with c =
     * routed_scaling_factor; config.json gets first_k_dense_replace = 2 and then expects a dense MLP of width 8 in
     * every layer.
     */
    @Test
    void deepseekFoldsSharedAndMergedExpertsIntoItsDenseMlp() {
        for (String type : new String[] {"deepseek_v2", "deepseek_v3"}) {
            ModelConfig c = SurgeryFixtures.deepseek("\"model_type\":\"" + type + "\",\"routed_scaling_factor\":2.0");
            int d = SurgeryFixtures.D;
            int i = SurgeryFixtures.I;
            int s = c.shared_expert_intermediate_size;
            assertEquals(type.equals("deepseek_v2") ? 2 * i : i, s, type);
            CheckpointLayout layout = new CheckpointLayout(c.modelType);
            SurgeryFixtures.MapSource source = (SurgeryFixtures.MapSource) SurgeryFixtures.experts(c);
            for (Projection p : Projection.values()) {
                long[] shape = p == Projection.DOWN ? new long[] {d, s} : new long[] {s, d};
                source.tensors().put(layout.sharedExpert(1, p), Nd4j.valueArrayOf(shape, -7.0 - p.ordinal(),
                        DataType.FLOAT));
            }
            double[] uniform = new double[8];
            Arrays.fill(uniform, 1.0 / 8);
            DenseMergeSurgery surgery = new DenseMergeSurgery(c, new double[][] {uniform, uniform});
            Map<String, INDArray> out = surgery.apply(source, 1, 1).tensors();
            assertEquals(3, out.size(), type + ": " + out.keySet());
            for (Projection p : Projection.values()) {
                INDArray w = out.get(CheckpointLayout.denseMlp(1, p));
                boolean down = p == Projection.DOWN;
                assertArrayEquals(down ? new long[] {d, 8} : new long[] {8, d}, w.shape(), type + " " + p);
                double merged = (100 + 35 + p.ordinal() + 1) * (down ? 2.0 : 1.0);
                for (int u = 0; u < 8; u++) {
                    double expected = u < i ? merged : u < i + s ? -7.0 - p.ordinal() : 0;
                    INDArray unit = down ? w.getColumn(u) : w.getRow(u);
                    assertEquals(expected, unit.minNumber().doubleValue(), 1e-4, type + " " + p + " unit " + u);
                    assertEquals(expected, unit.maxNumber().doubleValue(), 1e-4, type + " " + p + " unit " + u);
                }
            }
            ModelConfig dense = ModelConfig.parse(surgery.config(c).toString(), "dense");
            assertEquals(c.modelType, dense.modelType);
            assertEquals(2, dense.first_k_dense_replace);
            Map<String, long[]> expected = ModelSchema.expected(dense);
            assertArrayEquals(new long[] {8, d}, expected.get(CheckpointLayout.denseMlp(1, Projection.GATE)), type);
            assertTrue(!expected.containsKey(layout.routerGate(1)), type + ": no router left");
        }
    }

    @Test
    void deepseekDenseLayersNarrowerThanSharedPlusRoutedAreRefused() {
        ModelConfig c = ModelConfig.parse(SurgeryFixtures.deepseek("\"model_type\":\"deepseek_v2\"").jsonCopy()
                .put("intermediate_size", 5).toString(), "narrow");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new DenseMergeSurgery(c, new double[][] {new double[8], new double[8]}));
        assertEquals("merge-dense of deepseek_v2: intermediate_size 5 cannot hold the merged expert and the shared "
                + "expert side by side (moe_intermediate_size 2 + shared 4)", e.getMessage());
    }
}
