package org.sparkmoe.driver;

import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.Perplexity;

import java.util.function.Supplier;

/**
 * The command's model, leased and run on a few short windows in a daemon thread while an embedded Spark starts: the
 * tasks, which run in this JVM, then find the model in {@link ModelCache} and the forward's code compiled. A small
 * model's first chunk of windows otherwise spends most of its time in the interpreter and the JIT (the tiny Mixtral's
 * first chunk of 8 windows: about 0.9 s, a warm one 0.1 s); a large model's first chunk is mostly products, which no
 * warm-up shortens, so only checkpoints of at most {@link #MAX_CHECKPOINT_BYTES} are warmed. The windows are of
 * token 0. The warm-up ends at the latest with the call in progress when the command's job begins ({@link #close}):
 * its ND4J workspace (two windows' activations, a quarter of a task slot's at the default eight windows per chunk),
 * freed as it ends, is gone about when the job's first tasks start. A failure is left for the job to report.
 */
public final class ModelWarmup implements AutoCloseable {
    /** Checkpoints up to this size are warmed up. */
    static final long MAX_CHECKPOINT_BYTES = 64L << 20;
    /** Forward calls, of {@link #WINDOWS} windows each. */
    static final int CALLS = 16;
    static final int WINDOWS = 2;

    private final Thread thread;
    private volatile boolean stopping;
    private volatile int calls;

    private ModelWarmup(int window, int topK, Supplier<ModelCache.Lease> lease) {
        this.thread = new Thread(() -> run(window, topK, lease), "sparkmoe-model-warmup");
        thread.setDaemon(true);
    }

    /**
     * Starts the warm-up when {@code master} runs the tasks in this JVM, on the CPU, and the checkpoint is small;
     * null otherwise.
     *
     * @param lease the lease a task of the command takes (the same model, adapter and device: the same cache entry)
     * @param window the command's window length
     */
    public static ModelWarmup start(String master, Device device, long checkpointBytes, int window, int topK,
                                    Supplier<ModelCache.Lease> lease) {
        if (!SparkContexts.embedded(master) || device != Device.CPU || checkpointBytes > MAX_CHECKPOINT_BYTES) {
            return null;
        }
        ModelWarmup warmup = new ModelWarmup(window, topK, lease);
        warmup.thread.start();
        return warmup;
    }

    private void run(int window, int topK, Supplier<ModelCache.Lease> lease) {
        try (ModelCache.Lease model = lease.get()) {
            int[][] windows = new int[WINDOWS][window];
            while (calls < CALLS && !stopping) {
                Perplexity.windowNll(model.model(), windows, topK);
                calls++;
            }
        } catch (RuntimeException | Error e) {
            // the model does not load or run: the job's tasks meet the same failure and report it
        } finally {
            Nd4j.getWorkspaceManager().destroyAllWorkspacesForCurrentThread();
        }
    }

    /** The forward calls made so far. */
    int calls() {
        return calls;
    }

    /** Stops the warm-up after the call in progress (without waiting for it: the job's tasks start later). */
    @Override
    public void close() {
        stopping = true;
    }

    /** Waits for the warm-up's thread to end; for tests. */
    boolean awaitEnd(long millis) throws InterruptedException {
        thread.join(millis);
        return !thread.isAlive();
    }
}
