package org.sparkmoe.surgery;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.kernels.WeightStack;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The surgeries read a projection's experts where they are stored, a block of rows at a time: the streamed weighted
 * sums and k-means distances equal, bit for bit, the same computations over the whole float32 stack (float64 for
 * lowrank's base, the flattened float64 points for k-means), across several blocks and from bf16 as from float32
 * weights; and reduce, merge-dense and lowrank widen no expert weight whole ({@link TensorSource#readFloat} counted).
 */
class ExpertStackTest {
    private static final CheckpointLayout LAYOUT = new CheckpointLayout(ModelConfig.ModelType.MIXTRAL);
    private static final int E = 5;
    private static final int ROWS = 37;
    private static final int COLS = 23;

    /** Tensors in their stored type; {@code readFloat} records every name it widens whole. */
    private record CountingSource(Map<String, INDArray> tensors, Set<String> widened) implements TensorSource {
        @Override
        public boolean has(String name) {
            return tensors.containsKey(name);
        }

        @Override
        public long[] shape(String name) {
            return tensors.get(name).shape();
        }

        @Override
        public INDArray readFloat(String name) {
            widened.add(name);
            return tensors.get(name).castTo(DataType.FLOAT).dup('c');
        }

        @Override
        public INDArray stored(String name) {
            return tensors.get(name);
        }

        @Override
        public String describe() {
            return "counting source";
        }
    }

    /** Layer 0's E experts, every projection [ROWS, COLS] of random values stored as {@code type}. */
    private static CountingSource random(DataType type, long seed) {
        Nd4j.getRandom().setSeed(seed);
        Map<String, INDArray> t = new LinkedHashMap<>();
        for (int e = 0; e < E; e++) {
            for (Projection p : Projection.values()) {
                t.put(LAYOUT.expert(0, e, p), Nd4j.randn(DataType.FLOAT, ROWS, COLS).muli(0.1).castTo(type));
            }
        }
        return new CountingSource(t, new TreeSet<>());
    }

    /** Blocks of 4 rows (100 elements / 23 columns): 10 blocks, the last of one row. */
    private static ExpertStack smallBlocks(TensorSource source, Projection p) {
        List<INDArray> stored = new ArrayList<>();
        for (int e = 0; e < E; e++) {
            stored.add(source.stored(LAYOUT.expert(0, e, p)));
        }
        return new ExpertStack(WeightStack.of(stored), 100);
    }

    @Test
    void weightedSumsOverBlocksEqualTheWholeStack() {
        double[] w = {0.3, 0, 0.1 / 3, 0.25, 1 - 0.3 - 0.1 / 3 - 0.25};
        for (DataType type : new DataType[] {DataType.FLOAT, DataType.BFLOAT16}) {
            CountingSource source = random(type, 3);
            for (Projection p : Projection.values()) {
                ExpertStack stack = smallBlocks(source, p);
                assertEquals(4, stack.rowsPerBlock());
                INDArray whole = ExpertStack.read(source, LAYOUT, 0, E, p);                      // [E, rows, cols]
                assertArrayEquals(ExpertStack.weightedSum(whole, w).data().asFloat(),
                        stack.weightedSum(w, DataType.FLOAT).data().asFloat(), type + " " + p);
                assertArrayEquals(ExpertStack.weightedSum(whole.castTo(DataType.DOUBLE), w).data().asDouble(),
                        stack.weightedSum(w, DataType.DOUBLE).data().asDouble(), type + " " + p + " in float64");
                assertArrayEquals(whole.slice(2).dup('c').data().asFloat(), stack.expert(2).data().asFloat());
            }
        }
    }

    @Test
    void streamedKMeansEqualsKMeansOnTheFlattenedWeights() {
        for (DataType type : new DataType[] {DataType.FLOAT, DataType.BFLOAT16}) {
            CountingSource source = random(type, 8);
            ExpertStack[] stacks = new ExpertStack[Projection.values().length];
            double[][] flat = new double[E][3 * ROWS * COLS];                       // [E][w1 | w3 | w2], row-major
            for (Projection p : Projection.values()) {
                stacks[p.ordinal()] = smallBlocks(source, p);
                INDArray whole = ExpertStack.read(source, LAYOUT, 0, E, p);
                for (int e = 0; e < E; e++) {
                    double[] v = whole.slice(e).castTo(DataType.DOUBLE).dup('c').data().asDouble();
                    System.arraycopy(v, 0, flat[e], p.ordinal() * ROWS * COLS, v.length);
                }
            }
            ExpertPoints streamed = new ExpertPoints(stacks, 0, E);
            int[][] centres = {{0, 2, 4}, {1}, {3}};
            double[][] expected = KMeans.inMemory(flat).distances(centres);
            double[][] actual = streamed.distances(centres);
            for (int e = 0; e < E; e++) {
                assertArrayEquals(expected[e], actual[e], type + " expert " + e);
            }
            for (int k = 1; k <= E; k++) {
                assertArrayEquals(KMeans.cluster(flat, k, 17), KMeans.cluster(streamed, k, 17), type + " k " + k);
            }
            ExpertPoints last = new ExpertPoints(stacks, 2, E);                      // a group's experts 2..4
            assertArrayEquals(KMeans.cluster(java.util.Arrays.copyOfRange(flat, 2, E), 2, 5),
                    KMeans.cluster(last, 2, 5));
        }
    }

    /** A block is at most {@link ExpertStack#BLOCK_ELEMENTS}, whatever the projection's size; no more is widened. */
    @Test
    void blocksAreBoundedAndNoSurgeryWidensAWholeExpert() {
        INDArray big = Nd4j.createUninitialized(DataType.BFLOAT16, 3000, 1000);         // 3 blocks of 1048 rows
        ExpertStack stack = new ExpertStack(WeightStack.of(List.of(big)), ExpertStack.BLOCK_ELEMENTS);
        assertEquals(1048, stack.rowsPerBlock());
        assertTrue(stack.rowsPerBlock() * stack.cols() <= ExpertStack.BLOCK_ELEMENTS);
        assertThrows(IllegalArgumentException.class, () -> stack.rows(0, 0, 1049));

        ModelConfig c = SurgeryFixtures.mixtral(4, 2);
        Map<String, INDArray> tensors = new LinkedHashMap<>(((SurgeryFixtures.MapSource) SurgeryFixtures.experts(c))
                .tensors());
        tensors.replaceAll((name, t) -> name.contains(".experts.") ? t.castTo(DataType.BFLOAT16) : t);
        CountingSource source = new CountingSource(tensors, new TreeSet<>());
        double[][] uniform = {MergeWeights.uniform(4), MergeWeights.uniform(4)};
        List<LayerSurgery> surgeries = List.of(
                new ExpertReduceSurgery(c, 2, 2, ExpertReduceSurgery.By.WEIGHTS, null, 3),
                new DenseMergeSurgery(c, uniform),
                new LowRankSurgery(c, 1, uniform));
        for (LayerSurgery s : surgeries) {
            LayerResult r = s.apply(source, 1, 1);
            assertTrue(r.tensors().size() > 0);
            assertEquals(Set.of(), source.widened().stream().filter(n -> n.contains(".experts."))
                    .collect(java.util.stream.Collectors.toSet()), s.getClass().getSimpleName());
        }
    }
}
