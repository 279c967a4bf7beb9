package org.sparkmoe.surgery;

import org.nd4j.linalg.api.ndarray.INDArray;

import java.util.LinkedHashMap;

/**
 * What surgery made of one MoE layer.
 *
 * @param tensors new tensors by Hugging Face key (they replace or add to the checkpoint's; the new config.json
 *                decides which keys the new checkpoint holds)
 * @param groups  for expert reduction: group g lists the original experts merged into new expert g; else null
 * @param metrics named numbers for the report (α, errors, ...), in order
 */
public record LayerResult(LinkedHashMap<String, INDArray> tensors, int[][] groups,
                          LinkedHashMap<String, Double> metrics) {
    /** The parts of one layer in order: tensors and metrics together, the groups of whichever part has them. */
    public static LayerResult merge(java.util.List<LayerResult> parts) {
        LinkedHashMap<String, INDArray> tensors = new LinkedHashMap<>();
        LinkedHashMap<String, Double> metrics = new LinkedHashMap<>();
        int[][] groups = null;
        for (LayerResult r : parts) {
            tensors.putAll(r.tensors());
            metrics.putAll(r.metrics());
            groups = r.groups() != null ? r.groups() : groups;
        }
        return new LayerResult(tensors, groups, metrics);
    }
}
