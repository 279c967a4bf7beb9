package org.sparkmoe.driver.demo;

import org.sparkmoe.driver.eval.PerplexityReport;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What the demo measured and wrote.
 *
 * @param base    eval of the model
 * @param lora    eval with the trained adapter
 * @param surgery eval of the topk checkpoint
 * @param alpha   the surgery's w2 scale per MoE layer
 * @param seconds wall time of each stage, in order
 * @param outputs label → URI of everything written, in order
 */
record DemoResult(PerplexityReport base, PerplexityReport lora, PerplexityReport surgery, double[] alpha,
                  Map<String, Double> seconds, Map<String, String> outputs) {
    DemoResult {
        seconds = new LinkedHashMap<>(seconds);
        outputs = new LinkedHashMap<>(outputs);
    }
}
