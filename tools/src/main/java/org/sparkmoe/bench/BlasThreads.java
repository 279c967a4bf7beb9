package org.sparkmoe.bench;

import org.nd4j.linalg.factory.Nd4j;

import java.util.function.DoubleSupplier;

/** Runs a timed section with as many BLAS threads as cores, whatever the caller's setting, then restores it. */
final class BlasThreads {
    private BlasThreads() {
    }

    static double onAllCores(DoubleSupplier section) {
        var blas = Nd4j.factory().blas();
        int before = blas.getMaxThreads();
        blas.setMaxThreads(Runtime.getRuntime().availableProcessors());
        try {
            return section.getAsDouble();
        } finally {
            blas.setMaxThreads(before);
        }
    }
}
