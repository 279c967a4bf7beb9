package org.sparkmoe.surgery;

import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.stream.Collectors;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The sweep loop CP-ALS ({@link CpAls}) and TR-ALS ({@link TrAls}) share, over the three factors of one projection's
 * stacked experts W [E, out, in], each held as a matrix with one row per index of its mode: the experts' N [E, ·], the
 * output's O [out, ·], the input's I [in, ·]. They start Gaussian from a seed, drawn in that order; a form's sweep sets
 * each in turn to its least-squares optimum given the other two and gives the relative error ‖W − Ŵ‖_F / ‖W‖_F after
 * it from ⟨W, Ŵ⟩ and ‖Ŵ‖² ({@link #errorOf}). The sweeps stop after {@code maxIterations} or when the relative
 * error changes by less than {@code tolerance} (absolute: the change of the fit 1 − error, as the Tensor Toolbox's
 * cp_als); a form then turns the last factors into its {@link AlsFit}.
 */
abstract class AlsSweeps {
    final ExpertStack w;        // E × [out, in]
    private final double norm2; // ‖W‖²_F
    INDArray n;                 // N [E, nWidth]
    INDArray o;                 // O [out, oWidth]
    INDArray i;                 // I [in, iWidth]

    /** The Gaussian start from {@code seed}: N, O, then I, each row of the given width. */
    AlsSweeps(ExpertStack w, long seed, long nWidth, long oWidth, long iWidth) {
        SplittableRandom random = new SplittableRandom(seed);
        this.w = w;
        this.n = gaussian(random, w.experts(), nWidth);
        this.o = gaussian(random, w.rows(), oWidth);
        this.i = gaussian(random, w.cols(), iWidth);
        this.norm2 = squaredNorm(w);
    }

    /**
     * Refuses a fit with a rank below 1, fewer than one sweep or a negative tolerance.
     *
     * @param method the fit, as the message names it ("CP-ALS")
     * @param ranks  one rank (CP) or the ring's ranks (TR)
     */
    static void checkArguments(String method, int maxIterations, double tolerance, int... ranks) {
        if (Arrays.stream(ranks).anyMatch(r -> r < 1) || maxIterations < 1 || tolerance < 0) {
            String got = ranks.length == 1 ? String.valueOf(ranks[0])
                    : Arrays.stream(ranks).mapToObj(String::valueOf).collect(Collectors.joining(", ", "(", ")"));
            throw new IllegalArgumentException(method + " needs " + (ranks.length == 1 ? "rank" : "ranks")
                    + " ≥ 1, iterations ≥ 1, tolerance ≥ 0, got " + got + ", " + maxIterations + ", " + tolerance);
        }
    }

    /** The sweeps until they stop, then {@link #finish}. */
    final AlsFit run(int maxIterations, double tolerance) {
        double error = Double.NaN;
        int sweeps = 0;
        while (sweeps < maxIterations) {
            sweeps++;
            double next;
            try (Temporaries t = new Temporaries()) {                                     // the sweep's, and its inputs
                t.add(n);
                t.add(o);
                t.add(i);
                next = sweep(t);
            }
            boolean settled = !Double.isNaN(error) && Math.abs(error - next) < tolerance;
            error = next;
            if (settled) {
                break;
            }
        }
        return finish(sweeps, error);
    }

    /**
     * One sweep: N, O and I replaced by their updates (new arrays), its temporaries recorded in {@code t}.
     *
     * @return the relative error after it ({@link #errorOf})
     */
    abstract double sweep(Temporaries t);

    /** The fit from the last sweep's factors, in the form's layout. */
    abstract AlsFit finish(int sweeps, double relError);

    /** ‖W − Ŵ‖_F / ‖W‖_F from ⟨W, Ŵ⟩ and ‖Ŵ‖²: √((‖W‖² − 2⟨W, Ŵ⟩ + ‖Ŵ‖²) / ‖W‖²), at least 0 under the root. */
    final double errorOf(double inner, double model) {
        return Math.sqrt(Math.max(0, norm2 - 2 * inner + model) / norm2);
    }

    /** ‖W‖²_F, streamed. */
    static double squaredNorm(ExpertStack w) {
        double sum = 0;
        for (int e = 0; e < w.experts(); e++) {
            for (long r0 = 0; r0 < w.rows(); r0 += w.rowsPerBlock()) {
                try (Temporaries t = new Temporaries()) {
                    double b = t.add(w.rows(e, r0, Math.min(w.rows(), r0 + w.rowsPerBlock()))
                            .castTo(DataType.DOUBLE)).norm2Number().doubleValue();
                    sum += b * b;
                }
            }
        }
        return sum;
    }

    private static INDArray gaussian(SplittableRandom random, long rows, long cols) {
        double[] v = new double[Math.toIntExact(rows * cols)];
        for (int k = 0; k < v.length; k++) {
            v[k] = gaussian(random);
        }
        return Nd4j.create(v, new long[] {rows, cols}, DataType.DOUBLE);
    }

    /** A standard normal by Box–Muller from two uniforms of the stream. */
    private static double gaussian(SplittableRandom random) {
        double u = 1.0 - random.nextDouble();                                             // (0, 1]
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.nextDouble());
    }
}
