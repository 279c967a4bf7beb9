package org.sparkmoe.surgery;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.TensorSource;

import java.util.Map;

/**
 * A checkpoint with some tensors replaced or added: a name in {@code replaced} reads from there, a name in
 * {@code renamed} reads the base's tensor of the name it maps to (as stored), any other the base's own.
 */
public final class OverlayTensors implements TensorSource {
    private final TensorSource base;
    private final Map<String, INDArray> replaced;
    private final Map<String, String> renamed; // new name → base name

    public OverlayTensors(TensorSource base, Map<String, INDArray> replaced) {
        this(base, replaced, Map.of());
    }

    public OverlayTensors(TensorSource base, Map<String, INDArray> replaced, Map<String, String> renamed) {
        this.base = base;
        this.replaced = replaced;
        this.renamed = renamed;
    }

    /** The base's name for {@code name}. */
    private String inBase(String name) {
        return renamed.getOrDefault(name, name);
    }

    @Override
    public boolean has(String name) {
        return replaced.containsKey(name) || base.has(inBase(name));
    }

    @Override
    public long[] shape(String name) {
        INDArray t = replaced.get(name);
        return t != null ? t.shape() : base.shape(inBase(name));
    }

    @Override
    public DType dtype(String name) {
        return replaced.containsKey(name) ? DType.F32 : base.dtype(inBase(name));
    }

    @Override
    public INDArray readFloat(String name) {
        INDArray t = replaced.get(name);
        return t != null ? t.dup('c') : base.readFloat(inBase(name));
    }

    @Override
    public INDArray stored(String name) {
        INDArray t = replaced.get(name);
        return t != null ? t : base.stored(inBase(name));
    }

    @Override
    public String describe() {
        return base.describe() + " after surgery";
    }
}
