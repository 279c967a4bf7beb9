package org.sparkmoe.adapter;

import org.junit.jupiter.api.Test;
import org.sparkmoe.kernels.Device;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

/** The per-JVM model cache tells models apart by device, model and adapter (with its weights' version). */
class ModelCacheTest {

    @Test
    void theDeviceIsPartOfTheKey() {
        assertEquals("cpu file:/models/m", ModelCache.cacheKey("file:/models/m", null, null, Device.CPU));
        assertEquals("cuda file:/models/m", ModelCache.cacheKey("file:/models/m", null, null, Device.CUDA));
    }

    @Test
    void anAdapterKeyHoldsTheDeviceAndTheWeightsVersion() throws Exception {
        Path adapter = Files.createTempDirectory("adapter");
        Files.write(adapter.resolve("adapter_model.safetensors"), new byte[] {1, 2, 3});
        try {
            String uri = adapter.toUri().toString();
            String cpu = ModelCache.cacheKey("file:/models/m", uri, null, Device.CPU);
            String cuda = ModelCache.cacheKey("file:/models/m", uri, null, Device.CUDA);
            assertNotEquals(cpu, cuda);
            long modified = Files.getLastModifiedTime(adapter.resolve("adapter_model.safetensors")).toMillis();
            assertEquals("cpu file:/models/m + adapter " + uri + " @ " + modified + "/3", cpu);
            assertEquals(cpu + " as PEFT 0.19.0", ModelCache.cacheKey("file:/models/m", uri, "0.19.0", Device.CPU),
                    "the --peft-version an adapter is read with is part of the key");
        } finally {
            Files.delete(adapter.resolve("adapter_model.safetensors"));
            Files.delete(adapter);
        }
    }
}
