package org.sparkmoe.driver.train;

import org.apache.spark.SparkConf;
import org.junit.jupiter.api.Test;
import org.sparkmoe.driver.SparkLimits;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.text.TextSplit;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** When a train run's rounds run as jobs of rounds whose tasks average among themselves ({@link LocalRounds}). */
class LocalRoundsTest {
    private static final long MIB = 1L << 20;

    private static TrainPlan plan(int partitions, boolean passWorkspace) {
        TrainPlan plan = new TrainPlan("file:/m", List.of("file:/d.txt"), TextSplit.TRAIN, 32, 2, 6, 1, partitions,
                "file:/out", 1, false, List.of(Projection.GATE), 4, 8, false, 1e-3, 0, 0, 1.0, null, 42);
        return plan.withOptions(plan.options().withPassWorkspace(passWorkspace));
    }

    private static SparkConf master(String master) {
        return new SparkConf(false).set("spark.master", master);
    }

    @Test
    void onlyAnEmbeddedMasterWithASlotPerPartitionSmallPartialsAndThePassWorkspace() {
        assertTrue(LocalRounds.apply(master("local[2]"), plan(2, true), 10 * MIB, 64 * MIB));
        assertTrue(LocalRounds.apply(master("local[4, 3]"), plan(3, true), 10 * MIB, 64 * MIB));
        assertFalse(LocalRounds.apply(master("local[2]"), plan(3, true), 10 * MIB, 64 * MIB), "a partition waits");
        assertFalse(LocalRounds.apply(master("local-cluster[2,1,1024]"), plan(2, true), 10 * MIB, 64 * MIB));
        assertFalse(LocalRounds.apply(master("spark://host:7077"), plan(2, true), 10 * MIB, 64 * MIB));
        assertFalse(LocalRounds.apply(master("local[2]"), plan(2, false), 10 * MIB, 64 * MIB), "fresh arrays");
        assertFalse(LocalRounds.apply(master("local[2]"), plan(2, true), 33 * MIB, 64 * MIB), "the shuffle's tree");
        assertFalse(LocalRounds.apply(master("local[2]").set(SparkLimits.LOCAL_ROUNDS_KEY, "false"), plan(2, true),
                10 * MIB, 64 * MIB));
    }

    @Test
    void embeddedSlotsAreTheLocalMastersThreads() {
        assertEquals(1, SparkLimits.embeddedSlots("local"));
        assertEquals(8, SparkLimits.embeddedSlots(" local[8] "));
        assertEquals(Runtime.getRuntime().availableProcessors(), SparkLimits.embeddedSlots("local[*]"));
        assertEquals(0, SparkLimits.embeddedSlots("yarn"));
        assertEquals(0, SparkLimits.embeddedSlots("local-cluster[2,1,1024]"));
    }
}
