import java.lang.management.ManagementFactory;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.kernels.Flat;
import org.bytedeco.javacpp.FloatPointer;
import org.sparkmoe.kernels.VectorRows;

/**
 * The eval's per-row kernels over a vocabulary of V: per round, the nanoseconds and heap bytes of one
 * VectorRows.sumExpShifted call on a row of V floats (the log-sum-exp's sum), and the milliseconds to read a [ROWS, V]
 * FLOAT block of logits row by row from native memory (a JavaCPP pointer's get, what NativeElements.readFloats does for
 * Perplexity) against copying the whole block to the heap (Flat.floats). It compiles against builds before and after
 * the row reads, so both can be compared. The first rounds run before the JIT (and the vector kernels' warm-up)
 * has compiled them; the later ones are the steady state. A single-file program against a built driver classpath
 * (docs/benchmarks.md, "Eval's rows from native memory"):
 *
 *   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 java $(sed -n 's/^sparkmoe.jvm.flags=//p' conf/jvm.properties) \
 *       -cp "$(cat driver/target/classpath.txt)" deploy/bench/RowKernelsBench.java 1024 2048 8
 */
public class RowKernelsBench {
    public static void main(String[] a) {
        if (a.length != 3) {
            System.err.println("usage: RowKernelsBench V ROWS ROUNDS");
            System.exit(2);
        }
        int vocab = Integer.parseInt(a[0]), rows = Integer.parseInt(a[1]), rounds = Integer.parseInt(a[2]);
        var threads = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        float[] row = new float[vocab];
        for (int i = 0; i < vocab; i++) {
            row[i] = (float) Math.sin(i) * 5;
        }
        double[] scratch = new double[vocab];
        INDArray block = Nd4j.rand(DataType.FLOAT, rows, vocab);
        float[] read = new float[vocab];
        double sink = 0;
        int calls = 20_000, copies = 20;
        for (int round = 1; round <= rounds; round++) {
            long bytes = threads.getCurrentThreadAllocatedBytes(), t0 = System.nanoTime();
            for (int k = 0; k < calls; k++) {
                sink += VectorRows.sumExpShifted(row, 0, vocab, 5.0, scratch);
            }
            long t1 = System.nanoTime();
            long perCall = (threads.getCurrentThreadAllocatedBytes() - bytes) / calls;
            for (int k = 0; k < copies; k++) {
                FloatPointer logits = new FloatPointer(block.data().addressPointer());
                for (int r = 0; r < rows; r++) {
                    new FloatPointer(logits).position((long) r * vocab).get(read, 0, vocab);  // as readFloats does
                    sink += read[r % vocab];
                }
            }
            long t2 = System.nanoTime();
            for (int k = 0; k < copies; k++) {
                sink += Flat.floats(block)[k];
            }
            long t3 = System.nanoTime();
            System.out.printf("round %d: sumExpShifted %.0f ns and %d heap bytes per row; a [%d, %d] block read row by "
                    + "row %.2f ms, copied whole %.2f ms%n", round, (t1 - t0) / (double) calls, perCall, rows, vocab,
                    (t2 - t1) / 1e6 / copies, (t3 - t2) / 1e6 / copies);
        }
        System.out.println(sink == 42 ? "" : "done");
    }
}
