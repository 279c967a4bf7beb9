package org.sparkmoe.cuda;

/** A CUDA call failed; the message names the call and the CUDA error. Thrown by the native bridge. */
public final class CudaException extends RuntimeException {
    public CudaException(String message) {
        super(message);
    }
}
