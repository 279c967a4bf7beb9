package org.sparkmoe.kernels;

import org.nd4j.linalg.factory.Nd4j;

/**
 * Loads ND4J's native backend (libnd4j, OpenBLAS and their JavaCPP bindings) on the calling thread, once per JVM,
 * before the JVM's other work starts threads. It must not overlap another thread's loading of a native library:
 * ND4J looks up its BLAS functions with JavaCPP's {@code Loader.addressof}, which walks the loaded libraries with
 * glibc's {@code dl_iterate_phdr} and calls {@code dlopen} from inside its callback, taking the loader's two locks in
 * the opposite order to a {@code dlopen} on another thread. Both then wait for ever: an eval hung at its start on
 * 2026-12-07 with this thread in {@code addressof} → {@code dlopen(libgcc_s)} and Spark's start in
 * {@code dlopen(libextnet)} (gdb; docs/benchmarks.md). So a command loads the backend before it starts Spark, its
 * tokenizer or a warm-up thread, and an executor before it runs a task. About a second, no longer overlapping
 * Spark's start. A load that fails here fails again, with its cause, where ND4J is first used.
 */
public final class Nd4jLoad {
    private static volatile boolean done;

    private Nd4jLoad() {
    }

    /** Loads the backend on this thread, or returns at once when it is loaded. */
    public static void now() {
        if (done) {
            return;
        }
        try {
            Nd4j.getExecutioner();
        } catch (Throwable e) {
            // left to the first real use of ND4J, which reports it
        }
        done = true;
    }

    /** Whether {@link #now} has returned in this JVM. */
    public static boolean done() {
        return done;
    }
}
