package org.sparkmoe.moe;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.kernels.Flat;
import org.sparkmoe.model.DecoderLayer;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.routing.Routes;
import org.sparkmoe.train.TinyModels;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * An MoE block's experts run in G contiguous groups (route, each group's rows, one combine over the rows in group
 * order) give the inference forward's output bit for bit for every G: the combine adds each token's rows in plan order
 * (ascending expert) whichever tasks computed them. On the tiny Mixtral and on Qwen2-MoE (gated shared expert).
 */
class MoeBlockGroupsTest {
    private static final int TOKENS = 37;

    @Test
    void mixtralGroupsGiveTheForwardsBits() {
        checkEveryGrouping(TinyModels.MIXTRAL);
    }

    @Test
    void qwen2MoeWithASharedExpertGroupsGiveTheForwardsBits() {
        checkEveryGrouping("tests/src/test/resources/reference/qwen2-moe-tiny");
    }

    @Test
    void groupBoundsAreContiguousAndCoverTheExperts() {
        MoeBlock block = firstMoe(TinyModels.MIXTRAL);
        assertArrayEquals(new int[] {0, 2, 4, 6, 8}, block.expertGroups(4));
        assertArrayEquals(new int[] {0, 2, 5, 8}, block.expertGroups(3));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> block.expertGroups(9));
        assertEquals("expert groups must be in [1, 8] (the experts), got 9", e.getMessage());
    }

    private static void checkEveryGrouping(String fixture) {
        MoeBlock block = firstMoe(fixture);
        int k = block.options().topK();
        INDArray x = input(block.experts().hidden());                                       // [T, D]
        float[] whole = Flat.floats(block.forward(x, k).hidden());                          // [T, D]
        for (int groups : new int[] {1, 2, 4, block.experts().experts()}) {
            Routes routes = block.route(x, k);
            int[] bounds = block.expertGroups(groups);
            float[] ys = new float[0];
            for (int g = 0; g < groups; g++) {
                ys = concat(ys, Flat.floats(block.expertOutputs(x, routes, bounds[g], bounds[g + 1])));
            }
            INDArray rows = Flat.array(ys, new long[] {(long) TOKENS * k, x.size(1)});      // [T·K, D]
            assertArrayEquals(whole, Flat.floats(block.combine(x, routes, rows)), fixture + ", G = " + groups);
        }
    }

    private static MoeBlock firstMoe(String fixture) {
        MoeTransformer model = ModelFolder.load(TinyModels.folder(fixture), new Configuration());
        return model.layers().stream().filter(DecoderLayer::isMoe).findFirst().orElseThrow().moe();
    }

    /** [T, D] values in [-2, 2) from one seed. */
    private static INDArray input(int hidden) {
        SplittableRandom random = new SplittableRandom(24);
        float[] v = new float[TOKENS * hidden];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (4 * random.nextDouble() - 2);
        }
        return Flat.array(v, new long[] {TOKENS, hidden});
    }

    private static float[] concat(float[] a, float[] b) {
        float[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
