package org.sparkmoe.mumoe;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/** dL/dθ for every parameter (same names, order and shapes as {@link MumoeWeights#parameters()}) and dL/dx [T, I]. */
public record MumoeGradients(Map<String, INDArray> parameters, INDArray dx) {
    public MumoeGradients {
        parameters = Collections.unmodifiableMap(new LinkedHashMap<>(parameters));
    }
}
