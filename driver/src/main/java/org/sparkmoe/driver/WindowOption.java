package org.sparkmoe.driver;

import picocli.CommandLine.Option;

/** {@code --window S}, shared by eval, train, calibrate, demo and surgery lowrank. */
public final class WindowOption {
    @Option(names = "--window", defaultValue = "256", paramLabel = "S",
            description = "Tokens per window (≥ 2); the remainder of each file is dropped. Default: ${DEFAULT-VALUE}.")
    public int window;
}
