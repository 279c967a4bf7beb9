package org.sparkmoe.io;

/**
 * A model checkpoint (a safetensors file, its index, or its folder) is missing, corrupt or does
 * not hold what was asked for. The message is one line naming the file and the tensor or field,
 * what was expected and what was found.
 */
public class CheckpointFormatException extends RuntimeException {

    public CheckpointFormatException(String message) {
        super(message);
    }

    public CheckpointFormatException(String message, Throwable cause) {
        super(message, cause);
    }
}
