import java.lang.management.ManagementFactory;
import java.util.Random;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.model.Perplexity;

/**
 * The eval forward of one executor task slot, without Spark: Perplexity.windowNll of the model at MODEL (a folder
 * URI) on B windows of S random tokens per call, ROUNDS rounds of REPS calls in one JVM. Prints the model lease, the
 * first call, then per round the process CPU seconds (JIT compiler and warm-up threads included), the wall seconds
 * and the scored tokens/s; round 1 carries the JIT warm-up, the later rounds are the steady state. The NLL sum shows
 * that builds compared give the same bits. A single-file program against a built driver classpath
 * (docs/benchmarks.md, "e^x in a pass of its own"):
 *
 *   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX \
 *     java $(sed -n 's/^sparkmoe.jvm.flags=//p' conf/jvm.properties) -cp "$(cat driver/target/classpath.txt)" \
 *     deploy/bench/ForwardBench.java file://$PWD/examples/models/mixtral-tiny 8 256 12 3
 *
 * (one BLAS and one OpenMP thread, as the launcher sets per task slot: unset, ND4J's OpenMP ops take every core)
 */
public class ForwardBench {
    public static void main(String[] a) {
        if (a.length != 5) {
            System.err.println("usage: ForwardBench MODEL B S REPS ROUNDS");
            System.exit(2);
        }
        int batch = Integer.parseInt(a[1]), seq = Integer.parseInt(a[2]);
        int reps = Integer.parseInt(a[3]), rounds = Integer.parseInt(a[4]);
        var os = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        var threads = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long start = System.nanoTime();
        try (ModelCache.Lease lease = ModelCache.lease(a[0])) {
            int vocab = lease.model().ends().config().vocab_size;
            Random rnd = new Random(7);
            int[][] windows = new int[batch][seq];
            for (int[] w : windows) {
                for (int i = 0; i < seq; i++) {
                    w[i] = rnd.nextInt(vocab);
                }
            }
            System.out.printf("lease %.2f s%n", (System.nanoTime() - start) / 1e9);
            long scored = (long) reps * batch * Perplexity.scoredTokens(seq);
            for (int round = 1; round <= rounds; round++) {
                long cpu = os.getProcessCpuTime(), wall = System.nanoTime();
                long allocated = threads.getCurrentThreadAllocatedBytes();
                double nll = 0;
                for (int r = 0; r < reps; r++) {
                    long call = System.nanoTime();
                    for (double w : Perplexity.windowNll(lease.model(), windows, 2)) {
                        nll += w;
                    }
                    if (round == 1 && r == 0) {
                        System.out.printf("first call %.2f s%n", (System.nanoTime() - call) / 1e9);
                    }
                }
                double cpuS = (os.getProcessCpuTime() - cpu) / 1e9, wallS = (System.nanoTime() - wall) / 1e9;
                double heapMb = (threads.getCurrentThreadAllocatedBytes() - allocated) / 1e6;
                System.out.printf("round %d: %.2f s CPU, %.2f s wall, %.0f tokens/s, %.1f MB allocated on the heap by this thread "
                        + "(NLL sum %.10f)%n", round, cpuS, wallS, scored / wallS, heapMb, nll);
            }
        }
    }
}
