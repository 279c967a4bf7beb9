package org.sparkmoe.kernels;

import org.nd4j.linalg.factory.Nd4j;

/**
 * Loads ND4J's native backend (libnd4j, OpenBLAS and their JavaCPP bindings) on the calling thread, once per JVM,
 * before the JVM's other work starts threads. It must not overlap another thread's loading of a native library:
 * ND4J looks up its BLAS functions with JavaCPP's {@code Loader.addressof}, which walks the loaded libraries with
 * glibc's {@code dl_iterate_phdr} and calls {@code dlopen} from inside its callback, taking the loader's two locks in
 * the opposite order to a {@code dlopen} on another thread. Both then wait for ever: an eval hung at its start on
 * 2026-12-07 with this thread in {@code addressof} → {@code dlopen(libgcc_s)} and Spark's start in
 * {@code dlopen(libextnet)} (gdb; docs/benchmarks.md, "A deadlock at the start"). So a command loads the backend
 * before it starts Spark, its tokenizer or a warm-up thread, and an executor before it runs a task. About a second,
 * no longer overlapping Spark's start. A load that fails here is reported on stderr with its cause, once, and left to
 * the first real use of ND4J to fail the work.
 */
public final class Nd4jLoad {
    private static volatile boolean tried;

    private Nd4jLoad() {
    }

    /** Loads the backend on this thread, or returns at once when an earlier call has tried. */
    public static void now() {
        if (tried) {
            return;
        }
        try {
            Nd4j.getExecutioner();
        } catch (Throwable e) {
            // the JVM keeps the class's failed initialisation; later uses get "Could not initialize class", so
            // the cause is said here
            System.err.println("sparkmoe: ND4J's native backend did not load: " + e);
        }
        tried = true;
    }
}
