package org.sparkmoe.kernels;

import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;

/**
 * When the Vector API kernels ({@link GatedActivation}'s SwiGLU, {@link VectorRows}) may run. Until the JIT has
 * compiled a kernel, its Vector API calls run as plain Java that builds an object per vector operation, orders of
 * magnitude slower than the scalar loop: a tax every executor JVM would pay per kernel before the vectors pay off,
 * seconds on a busy machine, more than a small eval's whole scoring stage. So every kernel has a scalar twin giving the
 * same bits, and takes the twin until {@link #ready()}: a daemon thread, started when this class loads, runs each
 * kernel on a few elements until a batch of calls runs at compiled speed (the JIT compiles a method after enough
 * calls, whatever their sizes), then flips the switch. Which path a call takes never changes its result. A batch
 * is timed by the warm-up thread's own CPU time where the JVM measures it: on a machine busier than its cores, wall
 * time also counts the time the thread waited for a core, and the switch stayed off long after the kernels were
 * compiled (the tiny Mixtral eval spent 9.6% and, in another run, 20.3% of its executor samples in the scalar e^x).
 */
public final class VectorWarmup {
    /** Kernel calls between speed checks. */
    private static final int BATCH = 500;
    /**
     * A batch at compiled speed takes less than this much CPU time (interpreted, each call takes tens of
     * microseconds).
     */
    private static final long COMPILED_BATCH_NANOS = 1_000_000;
    /** Give up waiting after this long: the vector kernels are then used as they are. */
    private static final long MAX_NANOS = 60_000_000_000L;

    private static volatile boolean ready;

    static {
        Thread warmup = new Thread(VectorWarmup::run, "sparkmoe-vector-warmup");
        warmup.setDaemon(true);
        warmup.start();
    }

    private VectorWarmup() {
    }

    /**
     * Starts the warm-up now if it has not started (it starts with the first kernel call otherwise): an embedded
     * driver, whose JVM runs the tasks too, calls it before Spark starts, so the kernels compile while Spark starts
     * rather than while the first tasks wait on their scalar twins.
     */
    public static void start() {
        // loading this class started the thread
    }

    /** Whether the vector kernels are compiled (or the warm-up gave up waiting for it). */
    static boolean ready() {
        return ready;
    }

    /** Waits up to {@code millis} for {@link #ready()}; for tests. */
    static boolean awaitReady(long millis) throws InterruptedException {
        long end = System.nanoTime() + millis * 1_000_000;
        while (!ready && System.nanoTime() < end) {
            Thread.sleep(10);
        }
        return ready;
    }

    private static void run() {
        int n = 2 * GatedActivation.LANE_MULTIPLE;                     // two whole vectors
        double[] z = new double[n];
        double[] u = new double[n];
        double[] d = new double[n];
        double[] out = new double[n];
        double[] out2 = new double[n];
        float[] floats = new float[n];
        for (int i = 0; i < n; i++) {
            z[i] = (float) (i - n / 2) / 3;
            u[i] = (float) (n - i) / 5;
            d[i] = 1.0 / (i + 1);
        }
        ThreadMXBean threads = ManagementFactory.getThreadMXBean();
        boolean cpuTime = threads.isCurrentThreadCpuTimeSupported();
        long start = System.nanoTime();
        while (System.nanoTime() - start < MAX_NANOS) {
            long batchStart = cpuTime ? threads.getCurrentThreadCpuTime() : System.nanoTime();
            for (int call = 0; call < BATCH; call++) {
                boolean single = (call & 1) == 0;
                GatedActivation.SWIGLU.forwardLanes(z, u, out, n, single);
                GatedActivation.SWIGLU.backwardLanes(z, u, d, out, out2, n);
                VectorRows.addScaledLanes(out, 0, 0.5, u, n, single);
                VectorRows.scaleLanes(out2, 0.25, z, 0, n);
                VectorRows.addLanes(out2, 0, d, n);
                VectorRows.narrowLanes(out, floats, n);
                VectorRows.widenLanes(floats, out, n);
                VectorRows.expShiftedLanes(out2, 0, n, 0.125, VectorRows.maxLanes(out, 0, n), single);
                VectorRows.sumExpShiftedLanes(floats, 0, n, VectorRows.maxLanes(floats, 0, n), out2);
            }
            long batchEnd = cpuTime ? threads.getCurrentThreadCpuTime() : System.nanoTime();
            if (batchEnd - batchStart < COMPILED_BATCH_NANOS) {
                break;
            }
        }
        ready = true;
    }
}
