package org.sparkmoe.cuda;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.sparkmoe.kernels.Device;

import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The GPU of the task on a thread, and what the model caches key a device's models by. */
class TaskGpuTest {
    @AfterEach
    void clear() {
        TaskGpu.clear();
    }

    @Test
    void aThreadWithoutATaskGpuUsesDeviceZero() {
        assertEquals(0, TaskGpu.ordinal());
        assertEquals("cuda:0", Device.CUDA.cacheTag());
        assertEquals("cpu", Device.CPU.cacheTag());
    }

    @Test
    void theAssignmentIsPerThreadAndClearedWhenTheTaskEnds() throws InterruptedException {
        TaskGpu.assign("3");
        assertEquals(3, TaskGpu.ordinal());
        assertEquals("cuda:3", Device.CUDA.cacheTag());
        assertEquals("cpu", Device.CPU.cacheTag(), "a CPU model is one per JVM whatever the task's GPU");
        AtomicReference<String> other = new AtomicReference<>();
        Thread t = new Thread(() -> {
            String before = Device.CUDA.cacheTag();
            TaskGpu.assign("1");
            other.set(before + " " + Device.CUDA.cacheTag());
        });
        t.start();
        t.join();
        assertEquals("cuda:0 cuda:1", other.get());
        assertEquals(3, TaskGpu.ordinal(), "another thread's task does not move this one");
        TaskGpu.clear();
        assertEquals(0, TaskGpu.ordinal());
    }

    @Test
    void anAddressThatIsNoOrdinalIsRefusedNamingIt() {
        for (String address : new String[] {"GPU-5f0c2a1e", "-1", ""}) {
            TaskGpu.assign(address);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, TaskGpu::ordinal, address);
            assertEquals("Spark gave this task the GPU address '" + address + "'; --device cuda needs CUDA device "
                    + "ordinals (0, 1, ...) from the GPU discovery script, as deploy/gpu/getGpusResources.sh prints "
                    + "them", e.getMessage());
        }
        TaskGpu.assign(" 2 ");
        assertEquals(2, TaskGpu.ordinal());
    }
}
