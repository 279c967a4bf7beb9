package org.sparkmoe.driver;

import org.apache.spark.SparkConf;
import org.sparkmoe.kernels.Device;
import picocli.CommandLine;
import picocli.CommandLine.Option;

/**
 * {@code --device cpu|cuda}: where the routed experts of the models a job loads run. Resolved once on the
 * driver, before Spark starts, and carried to the executors by the job's plan. An explicit flag wins; without one
 * the Spark configuration's {@value #CONF_KEY} (spark-defaults.conf or --conf), else the driver's environment
 * variable {@code SPARKMOE_DEVICE} (set by the GPU container image), else cpu. An explicit flag that disagrees with
 * {@value #CONF_KEY} is refused in one line, as is cuda with {@value #TASK_GPUS} above 1. cuda loads the CUDA
 * kernels and checks for a GPU first (one line, exit 1, when there is none); each task then computes on the GPU
 * Spark's resource scheduler gave it ({@link TaskGpuPlugin}).
 */
public final class DeviceOptions {
    /** The Spark configuration key that sets the default device of every job. */
    public static final String CONF_KEY = "spark.sparkmoe.device";
    /** Spark's GPUs per task, which with cuda must be at most 1 (a task runs on the first GPU it is given). */
    static final String TASK_GPUS = "spark.task.resource.gpu.amount";

    @Option(names = "--device", paramLabel = "cpu|cuda", converter = Converter.class,
            description = "Where the routed experts run: cpu (ND4J) or cuda (our CUDA kernels; needs a build with "
                    + "-Pcuda-kernels and an NVIDIA GPU: eval, calibrate, train and demo keep the experts' weights on "
                    + "the GPU in bf16 where the fused layer fits them; attention and the rest stay on the CPU). "
                    + "Default: " + CONF_KEY + " from spark-defaults or "
                    + "--conf, else the environment variable SPARKMOE_DEVICE, else cpu; a --device that disagrees "
                    + "with " + CONF_KEY + " is refused.")
    public Device device;

    /** The device this run uses (see the class comment), checked to be usable here; call first in the command. */
    public Device resolve() {
        return resolve(device, new SparkConf(), System.getenv(Device.ENVIRONMENT)).requireAvailable();
    }

    /**
     * @param explicit    the --device flag, or null when absent
     * @param spark       the Spark configuration loaded from system properties (spark-submit puts spark-defaults
     *                    and --conf there)
     * @param environment the value of SPARKMOE_DEVICE, or null
     */
    public static Device resolve(Device explicit, SparkConf spark, String environment) {
        Device device = choose(explicit, spark, environment);
        if (device == Device.CUDA && spark.contains(TASK_GPUS)) {
            String amount = spark.get(TASK_GPUS).trim();
            double gpus;
            try {
                gpus = Double.parseDouble(amount);
            } catch (NumberFormatException e) {
                gpus = Double.NaN;      // Spark refuses it when it starts
            }
            if (gpus > 1) {
                throw new IllegalArgumentException(TASK_GPUS + "=" + amount + ": a SparkMoE task computes on one GPU; "
                        + "set it to 1, or to a fraction to share a GPU between tasks, and give executors several GPUs "
                        + "with spark.executor.resource.gpu.amount");
            }
        }
        return device;
    }

    private static Device choose(Device explicit, SparkConf spark, String environment) {
        Device configured = null;
        if (spark.contains(CONF_KEY)) {
            String value = spark.get(CONF_KEY);
            try {
                configured = Device.parse(value);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(CONF_KEY + "=" + value + " in the Spark configuration: "
                        + e.getMessage());
            }
        }
        if (explicit != null) {
            if (configured != null && configured != explicit) {
                throw new IllegalArgumentException("--device " + explicit.flagValue() + " conflicts with " + CONF_KEY
                        + "=" + configured.flagValue() + " from the Spark configuration (spark-defaults.conf or "
                        + "--conf); drop one or make them agree");
            }
            return explicit;
        }
        if (configured != null) {
            return configured;
        }
        if (environment != null && !environment.isBlank()) {
            try {
                return Device.parse(environment);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("environment variable " + Device.ENVIRONMENT + "=" + environment
                        + ": " + e.getMessage());
            }
        }
        return Device.CPU;
    }

    static final class Converter implements CommandLine.ITypeConverter<Device> {
        @Override
        public Device convert(String value) {
            try {
                return Device.parse(value);
            } catch (IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }
}
