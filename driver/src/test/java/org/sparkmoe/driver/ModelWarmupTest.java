package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.sparkmoe.adapter.ModelCache;
import org.sparkmoe.kernels.Device;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Which commands warm their model up while Spark starts, and that the warm-up runs, stops and fails quietly. */
class ModelWarmupTest {
    private static final String TINY = Path.of("..", "examples", "models", "mixtral-tiny").toAbsolutePath().toUri()
            .toString();

    private static long tinyBytes() {
        return MemoryPlan.mappedBytes(TINY, new Configuration());
    }

    @Test
    void aSmallModelOfAnEmbeddedMasterIsLeasedOnceAndRunEveryCall() throws InterruptedException {
        AtomicInteger leases = new AtomicInteger();
        ModelWarmup warmup = ModelWarmup.start("local[2]", Device.CPU, tinyBytes(), 16, 2, () -> {
            leases.incrementAndGet();
            return ModelCache.lease(TINY);
        });
        assertTrue(warmup.awaitEnd(120_000), "the warm-up ends");
        assertEquals(1, leases.get());
        assertEquals(ModelWarmup.CALLS, warmup.calls());
    }

    @Test
    void clusterMastersGpusAndLargeCheckpointsAreNotWarmed() {
        AtomicInteger leases = new AtomicInteger();
        Supplier<ModelCache.Lease> lease = () -> {
            leases.incrementAndGet();
            return ModelCache.lease(TINY);
        };
        for (String master : new String[] {"local-cluster[2,1,1024]", "spark://host:7077", "yarn"}) {
            assertNull(ModelWarmup.start(master, Device.CPU, tinyBytes(), 16, 2, lease), master);
        }
        assertNull(ModelWarmup.start("local[2]", Device.CUDA, tinyBytes(), 16, 2, lease));
        assertNull(ModelWarmup.start("local[2]", Device.CPU, ModelWarmup.MAX_CHECKPOINT_BYTES + 1, 16, 2, lease));
        assertEquals(0, leases.get());
    }

    @Test
    void closingStopsItAfterTheCallInProgress() throws InterruptedException {
        ModelWarmup warmup = ModelWarmup.start("local", Device.CPU, tinyBytes(), 16, 2, () -> ModelCache.lease(TINY));
        warmup.close();
        assertTrue(warmup.awaitEnd(120_000), "the warm-up ends");
        assertTrue(warmup.calls() <= 1, "calls after close: " + warmup.calls());
    }

    @Test
    void aModelThatFailsToLoadIsLeftToTheJob() throws InterruptedException {
        AtomicInteger uncaught = new AtomicInteger();
        Thread.UncaughtExceptionHandler before = Thread.getDefaultUncaughtExceptionHandler();
        Thread.setDefaultUncaughtExceptionHandler((thread, e) -> uncaught.incrementAndGet());
        try {
            ModelWarmup warmup = ModelWarmup.start("local[2]", Device.CPU, tinyBytes(), 16, 2, () -> {
                throw new IllegalArgumentException("no such model");
            });
            assertTrue(warmup.awaitEnd(10_000), "the warm-up ends");
            assertEquals(0, warmup.calls());
            assertEquals(0, uncaught.get(), "nothing thrown out of the warm-up's thread");
        } finally {
            Thread.setDefaultUncaughtExceptionHandler(before);
        }
    }
}
