package org.sparkmoe.cuda;

/**
 * {@code --device cuda} cannot be served here: no CUDA library in this build, no driver or no GPU. The message is
 * one line naming the cause; an {@link IllegalArgumentException} because the device choice is the user's input.
 */
public final class CudaUnavailableException extends IllegalArgumentException {
    public CudaUnavailableException(String message) {
        super(message);
    }
}
