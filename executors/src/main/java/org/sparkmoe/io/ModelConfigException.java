package org.sparkmoe.io;

/** A config.json that is missing, malformed, or asks for something SparkMoE does not support. */
public class ModelConfigException extends IllegalArgumentException {
    public ModelConfigException(String message) {
        super(message);
    }
}
