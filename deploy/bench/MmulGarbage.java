import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * How much anonymous memory ND4J's matrix products leave for the garbage collector: N products of two n×n float64
 * matrices in each of four ways, each result closed (or written into one preallocated array), and the process's
 * RssAnon growth after each way. A single-file program against a built driver classpath (docs/benchmarks.md,
 * "Native garbage of ND4J's mmul"):
 *
 *   OPENBLAS_NUM_THREADS=1 java -Xmx1g --add-modules=jdk.incubator.vector -cp "$(cat driver/target/classpath.txt)" \
 *       deploy/bench/MmulGarbage.java 169 400
 */
public class MmulGarbage {
    public static void main(String[] a) throws Exception {
        if (a.length != 2) {
            System.err.println("usage: MmulGarbage n N");
            System.exit(2);
        }
        int n = Integer.parseInt(a[0]), count = Integer.parseInt(a[1]);
        INDArray c = Nd4j.rand(DataType.DOUBLE, n, n);
        INDArray f = c.dup('f');
        INDArray intoC = Nd4j.create(DataType.DOUBLE, new long[] {n, n}, 'c');
        INDArray intoF = Nd4j.create(DataType.DOUBLE, new long[] {n, n}, 'f');
        System.out.printf("%d products of %d×%d float64 each; one result is %.0f KiB%n", count, n, n,
                n * n * 8 / 1024.0);
        measure("c.mmul(f), result closed", count, () -> c.mmul(f).close());
        measure("c.mmul(f, c-order result)", count, () -> c.mmul(f, intoC));
        measure("c.mmul(f, f-order result)", count, () -> c.mmul(f, intoF));
        measure("Nd4j.gemm(c, f), result closed", count, () -> Nd4j.gemm(c, f, false, false).close());
    }

    private static void measure(String what, int count, Runnable product) throws Exception {
        for (int i = 0; i < 20; i++) {
            product.run();                                                                  // warm-up
        }
        long before = rssAnonKib();
        for (int i = 0; i < count; i++) {
            product.run();
        }
        long grown = rssAnonKib() - before;
        System.out.printf("%-34s RssAnon +%7d KiB, %6.1f KiB per product%n", what, grown, (double) grown / count);
    }

    private static long rssAnonKib() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("RssAnon:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }
}
