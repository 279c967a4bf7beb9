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
}
