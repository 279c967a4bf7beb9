package org.sparkmoe.surgery;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.TensorSource;

import java.util.Map;

/** A checkpoint with some tensors replaced or added: a name in {@code replaced} reads from there, any other from the base. */
public final class OverlayTensors implements TensorSource {
    private final TensorSource base;
    private final Map<String, INDArray> replaced;

    public OverlayTensors(TensorSource base, Map<String, INDArray> replaced) {
        this.base = base;
        this.replaced = replaced;
    }

    @Override
    public boolean has(String name) {
        return replaced.containsKey(name) || base.has(name);
    }

    @Override
    public long[] shape(String name) {
        INDArray t = replaced.get(name);
        return t != null ? t.shape() : base.shape(name);
    }

    @Override
    public DType dtype(String name) {
        return replaced.containsKey(name) ? DType.F32 : base.dtype(name);
    }

    @Override
    public INDArray readFloat(String name) {
        INDArray t = replaced.get(name);
        return t != null ? t.dup('c') : base.readFloat(name);
    }

    @Override
    public INDArray stored(String name) {
        INDArray t = replaced.get(name);
        return t != null ? t : base.stored(name);
    }

    @Override
    public String describe() {
        return base.describe() + " after surgery";
    }
}
