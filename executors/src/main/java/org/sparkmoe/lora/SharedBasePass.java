package org.sparkmoe.lora;

import org.nd4j.linalg.api.ndarray.INDArray;

/** What every shared-base forward pass keeps: the routing decision, y [T, D] and the bytes it allocated. */
abstract class SharedBasePass implements SharedBaseLoraExperts.Pass {
    final SharedBaseRouting routing;
    final INDArray y; // [T, D]
    final long bytes;

    SharedBasePass(SharedBaseRouting routing, INDArray y, long bytes) {
        this.routing = routing;
        this.y = y;
        this.bytes = bytes;
    }

    @Override
    public INDArray output() {
        return y;
    }

    @Override
    public SharedBaseRouting routing() {
        return routing;
    }

    @Override
    public long allocatedBytes() {
        return bytes;
    }
}
