package org.sparkmoe.moe;

/** A routing decision for T tokens: K experts per token and their weights, row-major [T, K]. */
public record Routing(int[] experts, float[] weights, int topK) {
    public int tokens() {
        return experts.length / topK;
    }
}
