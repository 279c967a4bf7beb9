package org.sparkmoe.driver.bench;

import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;

/**
 * The parameters one token's forward pass multiplies, counted from a checkpoint's tensor shapes: every matrix (rank ≥
 * 2) once, except the routed experts' tensors (a name with {@code .experts.}: per-expert matrices or fused [E, …]
 * stacks), of which a token uses K of E, and the embedding table, which is a lookup. Vectors (norms, biases) do no
 * multiplication and are left out; a tied LM head counts the embedding once. Twice this is the FLOPs per token of
 * the forward, the yardstick of {@code bench eval}.
 */
final class ActiveParameters {
    private ActiveParameters() {
    }

    static double perToken(Checkpoint checkpoint, ModelConfig config) {
        long whole = 0;
        long routed = 0;   // every routed expert's elements
        boolean head = false;
        for (String name : checkpoint.names()) {
            long[] shape = checkpoint.shape(name);
            if (shape.length < 2 || name.contains("embed_tokens")) {
                continue;
            }
            long elements = 1;
            for (long d : shape) {
                elements = Math.multiplyExact(elements, d);
            }
            head |= name.startsWith("lm_head.");
            if (name.contains(".experts.")) {
                routed += elements;
            } else {
                whole += elements;
            }
        }
        if (!head && config.tie_word_embeddings) {
            whole += (long) config.vocab_size * config.hidden_size;
        }
        return whole + (routed == 0 ? 0 : (double) routed * config.num_experts_per_tok / config.num_experts);
    }
}
