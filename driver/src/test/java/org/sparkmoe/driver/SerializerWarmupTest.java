package org.sparkmoe.driver;

import org.apache.spark.SparkConf;
import org.apache.spark.serializer.KryoSerializer;
import org.junit.jupiter.api.Test;
import scala.reflect.ClassTag$;

import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The serializers' warm-up while a context starts: it ends by itself, also where the job would fail. */
class SerializerWarmupTest {
    @Test
    void warmsTheContextsKryoAndEnds() throws InterruptedException {
        SparkConf conf = SparkContexts.conf("serializer-warmup-test", "local[2]");
        Thread thread = SerializerWarmup.start(conf);
        thread.join(60_000);
        assertFalse(thread.isAlive());
        // the conf the warm-up used registers SparkMoE's classes: what it made, a job makes
        byte[] bytes = new KryoSerializer(conf).newInstance().serialize(new int[][] {{7}},
                ClassTag$.MODULE$.apply(int[][].class)).array();
        assertTrue(bytes.length > 0);
    }

    @Test
    void aRegistratorThatDoesNotLoadIsLeftToTheJob() throws InterruptedException {
        SparkConf conf = SparkContexts.conf("serializer-warmup-test", "local[2]")
                .set("spark.kryo.registrator", "org.example.Missing");
        AtomicReference<Throwable> uncaught = new AtomicReference<>();
        Thread.UncaughtExceptionHandler before = Thread.getDefaultUncaughtExceptionHandler();
        Thread.setDefaultUncaughtExceptionHandler((t, e) -> uncaught.set(e));
        try {
            Thread thread = SerializerWarmup.start(conf);
            thread.join(60_000);
            assertFalse(thread.isAlive());
        } finally {
            Thread.setDefaultUncaughtExceptionHandler(before);
        }
        assertNull(uncaught.get(), "the warm-up's thread threw");
    }
}
