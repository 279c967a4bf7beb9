package org.sparkmoe.driver;

import org.sparkmoe.kernels.Device;
import picocli.CommandLine;
import picocli.CommandLine.Option;

/**
 * {@code --device cpu|cuda}, shared by train, eval, calibrate and bench. cuda loads the CUDA kernels and checks
 * for a GPU first (a one-line error, exit 1, when there is none) and makes the expert grouped GEMMs of models
 * loaded in this JVM run on the GPU; {@code SparkContexts} passes the choice to executors in other JVMs as the
 * environment variable {@code SPARKMOE_DEVICE}.
 */
public final class DeviceOptions {
    @Option(names = "--device", defaultValue = "cpu", paramLabel = "cpu|cuda", converter = Converter.class,
            description = "Where the expert grouped GEMMs run: cpu (ND4J) or cuda (our CUDA kernels; needs a build "
                    + "with -Pcuda-kernels and an NVIDIA GPU). Default: ${DEFAULT-VALUE}.")
    public Device device;

    /** Makes the chosen device this JVM's; call first in the command. */
    public Device apply() {
        Device.use(device);
        return device;
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
