package org.sparkmoe.driver;

import org.apache.spark.SparkConf;
import org.apache.spark.io.CompressionCodec;
import org.apache.spark.serializer.JavaSerializer;
import org.apache.spark.serializer.KryoSerializer;
import scala.reflect.ClassTag$;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;

/**
 * Spark's serializers and compression codec used once in a daemon thread while the SparkContext starts. A JVM's first
 * job spends about 0.4 s of its scheduler thread's CPU making its first Kryo instance (loading and registering the
 * classes of {@link SparkMoeKryoRegistrator} and ND4J's), Java-serialising the task binary and loading LZ4 before its
 * first task starts; here those classes load and their code is interpreted once while Spark starts instead (the tiny
 * eval's first job: its first task 140–220 ms after the job's submission against 130–540 ms, the scheduler's warm-up
 * job 170–230 against 380–440 ms; docs/benchmarks.md).
 */
final class SerializerWarmup {
    private SerializerWarmup() {
    }

    /** Starts the warm-up for a context of {@code conf} (copied); the thread, which ends by itself. */
    static Thread start(SparkConf conf) {
        SparkConf copy = conf.clone();
        Thread thread = new Thread(() -> {
            try {
                new KryoSerializer(copy).newInstance().serialize(new int[][] {{1, 2}},
                        ClassTag$.MODULE$.apply(int[][].class));
                new JavaSerializer(copy).newInstance().serialize(new int[][] {{1, 2}},
                        ClassTag$.MODULE$.apply(int[][].class));
                try (OutputStream out = CompressionCodec.createCodec(copy)
                        .compressedOutputStream(new ByteArrayOutputStream())) {
                    out.write(new byte[] {1, 2});
                }
            } catch (Exception | LinkageError e) {     // Spark's SparkException too
                // the job meets the same failure and reports it
            }
        }, "sparkmoe-serializer-warmup");
        thread.setDaemon(true);
        thread.start();
        return thread;
    }
}
