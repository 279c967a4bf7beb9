package org.sparkmoe.kernels;

import org.nd4j.linalg.factory.Nd4j;

import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Loads ND4J's native backend (libnd4j, OpenBLAS and their JavaCPP bindings) in a daemon thread. A JVM's first use
 * of ND4J spends about a second there, and in a Spark JVM the first use is Spark's first Kryo instance (its
 * registrator registers ND4J's classes), made on the scheduler's thread for the first job's task binary: the first
 * job's tasks waited for it. Started when a SparkContext or an executor starts, the load overlaps Spark's own start.
 * Whichever thread reaches ND4J first, the others wait for the same class initialisation, so it happens once; a
 * load that fails here fails again, with its cause, where ND4J is first used.
 */
public final class Nd4jPreload {
    private static final AtomicBoolean STARTED = new AtomicBoolean();

    private Nd4jPreload() {
    }

    /**
     * Starts the load in the background, once per JVM.
     *
     * @return the loading thread, or null when an earlier call started it
     */
    public static Thread start() {
        if (!STARTED.compareAndSet(false, true)) {
            return null;
        }
        Thread thread = new Thread(Nd4jPreload::load, "sparkmoe-nd4j-preload");
        thread.setDaemon(true);
        thread.start();
        return thread;
    }

    private static void load() {
        try {
            Nd4j.getExecutioner();
        } catch (Throwable e) {
            // left to the first real use of ND4J, which reports it
        }
    }
}
