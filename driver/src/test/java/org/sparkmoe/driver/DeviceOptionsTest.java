package org.sparkmoe.driver;

import org.apache.spark.SparkConf;
import org.junit.jupiter.api.Test;
import org.sparkmoe.kernels.Device;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** How --device is resolved against spark.sparkmoe.device and SPARKMOE_DEVICE. */
class DeviceOptionsTest {
    private static SparkConf conf(String device) {
        SparkConf conf = new SparkConf(false);
        return device == null ? conf : conf.set(DeviceOptions.CONF_KEY, device);
    }

    @Test
    void explicitWinsOverTheEnvironmentAndAgreesWithTheConfiguration() {
        assertEquals(Device.CPU, DeviceOptions.resolve(Device.CPU, conf(null), "cuda"));
        assertEquals(Device.CUDA, DeviceOptions.resolve(Device.CUDA, conf("cuda"), null));
    }

    @Test
    void withoutTheFlagTheConfigurationThenTheEnvironmentThenCpu() {
        assertEquals(Device.CUDA, DeviceOptions.resolve(null, conf("CUDA"), "cpu"));
        assertEquals(Device.CUDA, DeviceOptions.resolve(null, conf(null), "cuda"));
        assertEquals(Device.CPU, DeviceOptions.resolve(null, conf(null), null));
    }

    @Test
    void anExplicitFlagThatConflictsWithTheConfigurationIsRefusedInOneLine() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DeviceOptions.resolve(Device.CUDA, conf("cpu"), null));
        assertEquals("--device cuda conflicts with spark.sparkmoe.device=cpu from the Spark configuration "
                + "(spark-defaults.conf or --conf); drop one or make them agree", e.getMessage());
    }

    @Test
    void anUnknownConfiguredDeviceNamesTheKey() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DeviceOptions.resolve(null, conf("tpu"), null));
        assertEquals("spark.sparkmoe.device=tpu in the Spark configuration: unknown device 'tpu', expected cpu or cuda",
                e.getMessage());
    }

    @Test
    void cudaRefusesSeveralGpusPerTaskAndTakesOneOrAShare() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DeviceOptions.resolve(Device.CUDA, conf(null).set("spark.task.resource.gpu.amount", "2"), null));
        assertEquals("spark.task.resource.gpu.amount=2: a SparkMoE task computes on one GPU; set it to 1, or to a "
                + "fraction to share a GPU between tasks, and give executors several GPUs with "
                + "spark.executor.resource.gpu.amount", e.getMessage());
        for (String amount : new String[] {"1", "0.5", " 1 "}) {
            assertEquals(Device.CUDA, DeviceOptions.resolve(null, conf("cuda").set("spark.task.resource.gpu.amount",
                    amount), null), amount);
        }
        assertEquals(Device.CPU, DeviceOptions.resolve(null, conf(null).set("spark.task.resource.gpu.amount", "2"),
                null), "GPUs a CPU job does not use are Spark's business");
    }
}
