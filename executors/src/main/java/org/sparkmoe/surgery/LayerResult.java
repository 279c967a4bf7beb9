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
}
