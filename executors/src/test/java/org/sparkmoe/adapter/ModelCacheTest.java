package org.sparkmoe.adapter;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.cuda.TaskGpu;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.train.TinyModels;

import java.nio.file.Files;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The per-JVM model cache tells models apart by device, model and adapter (with its weights' version), and keeps
 * what its models own within a byte bound, freeing evicted models but never one in use.
 */
class ModelCacheTest {
    private static final Configuration CONF = new Configuration();
    private static final int[][] TOKENS = {{1, 17, 300, 5, 900, 42}};

    @TempDir
    java.nio.file.Path tmp;

    @Test
    void theDeviceAndTheTasksGpuArePartOfTheKey() {
        assertEquals("cpu file:/models/m", ModelCache.cacheKey("file:/models/m", null, null, Device.CPU));
        assertEquals("cuda:0 file:/models/m", ModelCache.cacheKey("file:/models/m", null, null, Device.CUDA));
        TaskGpu.assign("1");
        try {
            assertEquals("cuda:1 file:/models/m", ModelCache.cacheKey("file:/models/m", null, null, Device.CUDA),
                    "a task on GPU 1 gets the model whose experts live there");
            assertEquals("cpu file:/models/m", ModelCache.cacheKey("file:/models/m", null, null, Device.CPU));
        } finally {
            TaskGpu.clear();
        }
    }

    @Test
    void anAdapterKeyHoldsTheDeviceAndTheWeightsVersion() throws Exception {
        java.nio.file.Path adapter = Files.createDirectory(tmp.resolve("adapter"));
        Files.write(adapter.resolve("adapter_model.safetensors"), new byte[] {1, 2, 3});
        String uri = adapter.toUri().toString();
        String cpu = ModelCache.cacheKey("file:/models/m", uri, null, Device.CPU);
        String cuda = ModelCache.cacheKey("file:/models/m", uri, null, Device.CUDA);
        assertNotEquals(cpu, cuda);
        long modified = Files.getLastModifiedTime(adapter.resolve("adapter_model.safetensors")).toMillis();
        assertEquals("cpu file:/models/m + adapter " + uri + " @ " + modified + "/3", cpu);
        assertEquals(cpu + " as PEFT 0.19.0", ModelCache.cacheKey("file:/models/m", uri, "0.19.0", Device.CPU),
                "the --peft-version an adapter is read with is part of the key");
    }

    @Test
    void theBoundIsReadFromTheEnvironmentInBytes() {
        assertEquals(2L << 30, ModelCache.parseLimit(null));
        assertEquals(1_000_000L, ModelCache.parseLimit(" 1000000 "));
        assertEquals(0L, ModelCache.parseLimit("0"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ModelCache.parseLimit("2g"));
        assertEquals("SPARKMOE_MODEL_CACHE_BYTES must be a number of bytes >= 0, got '2g'", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> ModelCache.parseLimit("-1"));
    }

    @Test
    void loadingBeyondTheBoundFreesTheLeastRecentlyUsedModelNoTaskHolds() {
        String model = TinyModels.folder(TinyModels.MIXTRAL).toString();
        ModelConfig config = ModelFolder.readConfig(new Path(model), CONF);
        String first = adapter(config, "first", 1);
        String second = adapter(config, "second", 2);
        String third = adapter(config, "third", 3);
        long bound = ModelCache.limitBytes();
        try {
            ModelCache.limitBytes(0);
            MoeTransformer adapted;
            try (ModelCache.Lease held = ModelCache.lease(model, first, null, Device.CPU)) {
                adapted = held.model();
                assertTrue(adapted.ownedBytes() > 0, "an adapted model owns its adapter's factors");
                INDArray logits = adapted.logits(TOKENS);
                try (ModelCache.Lease lease = ModelCache.lease(model, second, null, Device.CPU)) {
                    assertTrue(keys().stream().anyMatch(k -> k.contains("first")), "a model in use is never freed");
                }
                assertEquals(logits, held.model().logits(TOKENS), "the held model still computes the same logits");
            }
            try (ModelCache.Lease lease = ModelCache.lease(model, third, null, Device.CPU)) {
                List<String> cached = keys();
                assertEquals(2, cached.size(), cached::toString);
                assertTrue(cached.contains("cpu " + model), "the base stays while an adapted model on it is cached");
                assertTrue(cached.get(1).contains("third"), "the newest model stays however small the bound");
                assertEquals(0, adapted.ownedBytes(), "the evicted adapter's factors were freed");
                assertEquals(lease.model().ownedBytes() + baseBytes(model), ModelCache.ownedBytes());
            }
        } finally {
            ModelCache.limitBytes(bound);
        }
    }

    private static long baseBytes(String model) {
        try (ModelCache.Lease base = ModelCache.lease(model)) {
            return base.model().ownedBytes();
        }
    }

    private static List<String> keys() {
        return ModelCache.cachedKeys();
    }

    private String adapter(ModelConfig config, String name, long seed) {
        AdapterConfig spec = new AdapterConfig(4, 8, List.of(Projection.GATE, Projection.UP, Projection.DOWN), false,
                null);
        Path dir = new Path(tmp.resolve(name).toUri());
        PeftAdapter.of(config, spec, AdapterFixtures.randomState(config, spec, seed)).write(dir, CONF);
        return dir.toString();
    }
}
