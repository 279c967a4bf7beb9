package org.sparkmoe.driver.train;

import org.apache.spark.SparkEnv;
import org.apache.spark.storage.BlockId;
import org.apache.spark.storage.BlockManager;
import org.apache.spark.storage.BlockResult;
import org.apache.spark.storage.StorageLevel;
import org.apache.spark.storage.TestBlockId;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.train.TrainState;
import scala.Option;
import scala.runtime.AbstractFunction1;
import scala.reflect.ClassTag;
import scala.reflect.ClassTag$;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;

/**
 * Where a round's starting state is kept between rounds: its C chunks as blocks of Spark's block managers, one block
 * per chunk, named by run, step and chunk. The root of round r's averaging tree puts each chunk of the mean in the
 * block manager of the JVM that computed it (the driver's when it averaged the partials, which the tasks keep here
 * too until it has read them: {@link #putPartial}); round r+1's tasks read them from their own JVM's memory when it
 * holds them (embedded local mode: always) and fetch them from that JVM otherwise. The driver puts the state it
 * starts from (the initial one, a resumed checkpoint's) the same way, and reads a kept mean only when it needs it (a
 * checkpoint, the end of the run). A block lost with its executor is refetched from nowhere: {@link #fetch} then
 * throws {@link Lost}, and {@link TrainJob} reruns the rounds since the last state the driver holds. Small and
 * serialisable: tasks carry it in their closure.
 */
final class KeptMean implements Serializable {
    private static final ClassTag<StateMean> TAG = ClassTag$.MODULE$.apply(StateMean.class);

    /**
     * A chunk of a kept mean, or of a partial the driver was to read, is gone (its executor was lost): the rounds
     * since the driver's last state rerun.
     */
    static final class Lost extends IllegalStateException {
        static final String MARK = "sparkmoe: kept train state lost";
        /** In the message of a lost partial, also when it reaches the driver as a failed task's. */
        private static final String PARTIAL = " (a partial of the round)";

        Lost(String block, boolean partial) {
            super(MARK + ": block " + block + " is gone (its executor was lost?)" + (partial ? PARTIAL : ""));
        }

        /**
         * Whether what {@code failure} (any cause) lost is a partial of the round (its starting state was read), on the
         * driver or in a task.
         */
        static boolean partialCaused(Throwable failure) {
            return messageHas(failure, PARTIAL);
        }

        /** Whether {@code failure} (a failed job's exception, any cause) comes from a task's {@code Lost}. */
        static boolean caused(Throwable failure) {
            return messageHas(failure, "");
        }

        /** Whether a message in {@code failure}'s cause chain is a {@code Lost}'s and holds {@code text}. */
        private static boolean messageHas(Throwable failure, String text) {
            for (Throwable t = failure; t != null; t = t.getCause()) {
                if (t.getMessage() != null && t.getMessage().contains(MARK) && t.getMessage().contains(text)) {
                    return true;
                }
            }
            return false;
        }
    }

    private final String run;
    private final long step;
    private final int chunks;

    KeptMean(String run, long step, int chunks) {
        this.run = run;
        this.step = step;
        this.chunks = chunks;
    }

    int chunks() {
        return chunks;
    }

    private BlockId block(int chunk) {
        return new TestBlockId("sparkmoe_train_" + run + "_step" + step + "_chunk" + chunk);
    }

    private BlockId partial(int first, int chunk) {
        return new TestBlockId("sparkmoe_train_" + run + "_step" + step + "_partial" + first + "_chunk" + chunk);
    }

    /**
     * On an executor: keeps one chunk of the partial mean of the partitions from {@code first} in this JVM's block
     * manager, for the driver to {@link #takePartial} (the levels of the averaging tree the driver computes).
     */
    void putPartial(int first, StateMean chunk) {
        blocks().putSingle(partial(first, chunk.chunk()), chunk, StorageLevel.MEMORY_AND_DISK(), true, TAG);
    }

    /**
     * On the driver: a chunk {@link #putPartial} kept, read from the driver's own memory when the task ran in its JVM
     * (embedded local mode) and fetched from the executor otherwise, then removed.
     */
    StateMean takePartial(int first, int chunk) {
        BlockId id = partial(first, chunk);
        StateMean value = read(id, true);
        blocks().master().removeBlock(id);
        return value;
    }

    /**
     * On the driver, after {@code failure} ended a round: removes the partials {@link #putPartial} kept for {@code
     * kept}, wherever they are; a failure to do so is added to {@code failure} as suppressed, not thrown.
     */
    static void dropPartials(KeptMean kept, Exception failure) {
        try {
            kept.dropPartials();
        } catch (RuntimeException e) {
            failure.addSuppressed(e);
        }
    }

    private void dropPartials() {
        scala.collection.Iterator<BlockId> ids = blocks().master().getMatchingBlockIds(
                new NamePrefix("test_sparkmoe_train_" + run + "_step" + step + "_partial"), false).iterator();
        while (ids.hasNext()) {
            blocks().master().removeBlock(ids.next());
        }
    }

    /** Selects blocks by the start of their names (the master's list of reported blocks; an RPC message). */
    private static final class NamePrefix extends AbstractFunction1<BlockId, Object> implements Serializable {
        private final String prefix;

        NamePrefix(String prefix) {
            this.prefix = prefix;
        }

        @Override
        public Object apply(BlockId id) {
            return id.name().startsWith(prefix);
        }
    }

    /** On the driver: keeps {@code state} (at its step) for the next round's tasks; the state is left alone. */
    static KeptMean put(String run, TrainState state) {
        List<StateMean> split = StateMean.split(state, 1, StateMean.CHUNK_BYTES);
        KeptMean kept = new KeptMean(run, state.step(), split.size());
        for (StateMean chunk : split) {
            kept.put(chunk);
        }
        return kept;
    }

    /** Keeps one chunk of the mean in this JVM's block manager (the root of the averaging tree calls it). */
    void put(StateMean chunk) {
        // deserialised in memory: a task of this JVM reads the chunk without a copy; spilled to disk under pressure
        blocks().putSingle(block(chunk.chunk()), chunk, StorageLevel.MEMORY_AND_DISK(), true, TAG);
    }

    /** The kept state, as new tensors (a task trains on it in place); throws {@link Lost} when a chunk is gone. */
    TrainState fetch() {
        List<StateMean> means = new ArrayList<>(chunks);
        for (int c = 0; c < chunks; c++) {
            means.add(read(block(c), false));
        }
        return StateMean.join(means);
    }

    /** Chunk {@code c} as kept (not a copy: read only); throws {@link Lost} when it is gone. */
    StateMean chunk(int c) {
        return read(block(c), false);
    }

    /**
     * Chunk {@code c} of a round's own result kept for a later part of the round (gradient averaging's mean gradient,
     * {@link RoundTree.GradientStep}): when it is gone, a {@link Lost} of a partial, and the round reruns from its
     * start.
     */
    StateMean roundChunk(int c) {
        return read(block(c), true);
    }

    /** A kept chunk, from this JVM's memory or fetched from the executor that holds it; {@link Lost} when gone. */
    private static StateMean read(BlockId id, boolean partial) {
        Option<BlockResult> found = blocks().get(id, TAG);
        if (found.isEmpty()) {
            throw new Lost(id.name(), partial);
        }
        scala.collection.Iterator<Object> values = found.get().data();
        StateMean chunk = (StateMean) values.next();
        while (values.hasNext()) {  // drain: the read lock is released when the iterator is done
            values.next();
        }
        return chunk;
    }

    /** On the driver: removes the blocks wherever they are (a later round's tasks have read them). */
    void drop() {
        for (int c = 0; c < chunks; c++) {
            blocks().master().removeBlock(block(c));
        }
    }

    private static BlockManager blocks() {
        return SparkEnv.get().blockManager();
    }
}
