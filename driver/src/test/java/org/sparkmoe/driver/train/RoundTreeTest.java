package org.sparkmoe.driver.train;

import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.kernels.Nd4jLoad;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.train.TrainState;
import scala.Tuple2;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The averaging tree on real SparkContexts: the mean of 5 partitions' states (a P that is no power of two, in 2
 * chunks) equals the fixed binary tree of means over partition indices computed by hand, bit for bit, with 1 and
 * with 3 task slots, and wherever its levels run: all in the shuffle, all on the driver, or the driver taking over at
 * span 2 or 4; the metrics are summed and the slowest partition's time kept.
 */
class RoundTreeTest {
    private static final int P = 5;
    private static final long CHUNK = 200;   // bytes: 3 tensors of 3·8 floats = 96 bytes each → chunks of 2 and 1

    @Test
    void theMeanIsTheFixedTreeOverPartitionsWhateverTheScheduling() {
        TrainState[] states = new TrainState[P];
        long[] weights = new long[P];
        for (int p = 0; p < P; p++) {
            states[p] = state(p);
            weights[p] = 1 + 2L * p;
        }
        int chunks = StateMean.chunkKeys(states[0], CHUNK).size();
        assertEquals(2, chunks);
        TrainState expected = StateMean.join(byHand(states, weights, chunks));

        long bytes = states[0].bytes();
        assertEquals(1, RoundTree.driverSpan(P, bytes, 5 * bytes));
        assertEquals(2, RoundTree.driverSpan(P, bytes, 3 * bytes));
        assertEquals(4, RoundTree.driverSpan(P, bytes, 2 * bytes));
        assertEquals(8, RoundTree.driverSpan(P, bytes, bytes - 1), "no level fits: the executors form the mean");
        List<RoundTree.Round> rounds = List.of(run("local[1]", states, weights, chunks, 0), run("local[3]", states, weights, chunks, 0),
                run("local[3]", states, weights, chunks, Long.MAX_VALUE),
                run("local[1]", states, weights, chunks, 3 * bytes),
                run("local[3]", states, weights, chunks, 2 * bytes));
        for (String key : expected.params().keySet()) {
            for (RoundTree.Round round : rounds) {
                assertArrayEquals(floats(expected.params().get(key)), floats(round.state().params().get(key)), key);
                assertArrayEquals(floats(expected.m().get(key)), floats(round.state().m().get(key)), key);
                assertArrayEquals(floats(expected.v().get(key)), floats(round.state().v().get(key)), key);
            }
        }
        // the tree is not the left fold: the order of means shows in the bits somewhere
        TrainState fold = StateMean.join(leftFold(states, weights, chunks));
        boolean differs = false;
        for (String key : expected.params().keySet()) {
            differs |= !java.util.Arrays.equals(floats(fold.params().get(key)), floats(expected.params().get(key)));
        }
        assertTrue(differs, "test states too tame: fold and tree agree everywhere");
        // metrics: steps 2 per partition, loss sums p + 1, tokens 100 p, seconds p / 10, RSS 1000·(3p mod 5),
        // heap 10 p
        for (RoundTree.Round round : rounds) {
            assertEquals(15.0 / 10, round.loss(), 0);
            assertEquals(1000, round.tokens());
            assertEquals(0.4, round.computeSeconds(), 0);
            assertEquals(4000, round.rssAnon(), "the largest executor RSS of the round");
            assertEquals(30, round.heapCommitted(), "the heap of the JVM with the largest RSS (partition 3)");
            assertEquals(3, round.state().step());
        }
    }

    private static RoundTree.Round run(String master, TrainState[] states, long[] weights, int chunks,
                                       long driverBytes) {
        List<Tuple2<Long, RoundNode>> leaves = new ArrayList<>();
        for (int p = 0; p < P; p++) {
            for (StateMean chunk : StateMean.split(states[p], weights[p], CHUNK)) {
                leaves.add(new Tuple2<>((long) p, chunk.chunk() == 0
                        ? new RoundNode(p, chunk, 2, p + 1, p + 1, 0, 100L * p, p / 10.0, 1000L * ((p * 3) % 5),
                        10L * p)
                        : new RoundNode(p, chunk, 0, 0, 0, 0, 0, 0, -1, 0)));
            }
        }
        Nd4jLoad.now();                        // as SparkContexts.start does, before Spark starts
        try (JavaSparkContext sc = new JavaSparkContext(SparkContexts.conf("round-tree-test", master))) {
            JavaPairRDD<Long, RoundNode> rdd = sc.parallelizePairs(leaves, P);
            return RoundTree.average(rdd, P, chunks, states[0].bytes(), driverBytes, null);
        }
    }

    /** Spans 2, 4, 8: node k of a level is the mean of nodes 2k and 2k+1 of the level below, when both exist. */
    private static List<StateMean> byHand(TrainState[] states, long[] weights, int chunks) {
        List<StateMean> out = new ArrayList<>();
        for (int c = 0; c < chunks; c++) {
            List<StateMean> level = new ArrayList<>();
            for (int p = 0; p < P; p++) {
                level.add(StateMean.split(states[p], weights[p], CHUNK).get(c));
            }
            while (level.size() > 1) {
                List<StateMean> up = new ArrayList<>();
                for (int k = 0; k < level.size(); k += 2) {
                    up.add(k + 1 < level.size() ? level.get(k).mean(level.get(k + 1)) : level.get(k));
                }
                level = up;
            }
            out.add(level.get(0));
        }
        return out;
    }

    private static List<StateMean> leftFold(TrainState[] states, long[] weights, int chunks) {
        List<StateMean> out = new ArrayList<>();
        for (int c = 0; c < chunks; c++) {
            StateMean acc = StateMean.split(states[0], weights[0], CHUNK).get(c);
            for (int p = 1; p < P; p++) {
                acc = acc.mean(StateMean.split(states[p], weights[p], CHUNK).get(c));
            }
            out.add(acc);
        }
        return out;
    }

    private static TrainState state(int partition) {
        Random random = new Random(17 + partition);
        LinkedHashMap<String, INDArray> p = new LinkedHashMap<>();
        LinkedHashMap<String, INDArray> m = new LinkedHashMap<>();
        LinkedHashMap<String, INDArray> v = new LinkedHashMap<>();
        for (int t = 0; t < 3; t++) {
            p.put("t" + t, random(random, 1));
            m.put("t" + t, random(random, 1e-3));
            v.put("t" + t, random(random, 1e-7));
        }
        return new TrainState(p, m, v, 3);
    }

    private static INDArray random(Random random, double scale) {
        double[] values = new double[8];
        for (int i = 0; i < values.length; i++) {
            values[i] = scale * random.nextGaussian();
        }
        return Nd4j.create(values, new long[] {2, 4}, 'c').castTo(DataType.FLOAT);
    }

    private static float[] floats(INDArray a) {
        return a.dup('c').data().asFloat();
    }
}
