import java.util.Random;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.model.Attention;
import org.sparkmoe.model.RotaryEmbedding;

/**
 * Times Attention.forward on the bundled Mixtral's shape (D 128, H 4, KVH 2, hd 32) on B windows of S tokens in
 * float32: REPS warm-up calls, then REPS timed ones; prints the best and the mean. A single-file program against a
 * built driver classpath (docs/benchmarks.md, "Blockwise attention"):
 *
 *   OPENBLAS_NUM_THREADS=1 java --add-modules=jdk.incubator.vector -cp "$(cat driver/target/classpath.txt)" \
 *       deploy/bench/AttnBench.java 8 256 40
 */
public class AttnBench {
    public static void main(String[] a) {
        if (a.length != 3) {
            System.err.println("usage: AttnBench B S REPS");
            System.exit(2);
        }
        int batch = Integer.parseInt(a[0]), seq = Integer.parseInt(a[1]), reps = Integer.parseInt(a[2]);
        int d = 128, h = 4, kvh = 2, hd = 32;
        Nd4j.getRandom().setSeed(1);
        INDArray wq = Nd4j.randn(DataType.FLOAT, h * hd, d).muli(0.1), wk = Nd4j.randn(DataType.FLOAT, kvh * hd, d).muli(0.1);
        INDArray wv = Nd4j.randn(DataType.FLOAT, kvh * hd, d).muli(0.1), wo = Nd4j.randn(DataType.FLOAT, d, h * hd).muli(0.1);
        Attention attn = new Attention(wq, wk, wv, wo, null, null, null, h, kvh, hd, null);
        RotaryEmbedding rope = new RotaryEmbedding(hd, 10000.0, seq);
        INDArray x = Nd4j.randn(DataType.FLOAT, (long) batch * seq, d);
        for (int i = 0; i < reps; i++) attn.forward(x, batch, seq, rope);   // warm-up
        long best = Long.MAX_VALUE, total = 0;
        for (int i = 0; i < reps; i++) {
            long t = System.nanoTime();
            attn.forward(x, batch, seq, rope);
            long dt = System.nanoTime() - t;
            best = Math.min(best, dt);
            total += dt;
        }
        System.out.printf("B %d S %d: best %.2f ms, mean %.2f ms per forward (%.0f tokens/s at best)%n", batch, seq,
                best / 1e6, total / 1e6 / reps, (double) batch * seq / (best / 1e9));
    }
}
