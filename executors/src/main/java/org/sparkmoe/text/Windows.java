package org.sparkmoe.text;

/**
 * Cuts a token stream into the perplexity protocol's windows (docs/data.md): non-overlapping, each
 * exactly {@code window} tokens, the remainder dropped.
 */
public final class Windows {

    private Windows() {
    }

    /**
     * @param tokens the whole split's ids, [N]
     * @param window tokens per window, W ≥ 2 (position 0 is context only, positions 1..W-1 are
     *     scored)
     * @return [floor(N / W), W]; window i is {@code tokens[i*W, (i+1)*W)}
     */
    public static int[][] cut(int[] tokens, int window) {
        if (window < 2) {
            throw new IllegalArgumentException("--window must be ≥ 2, got " + window);
        }
        int count = tokens.length / window;
        int[][] windows = new int[count][window]; // [count, W]
        for (int i = 0; i < count; i++) {
            System.arraycopy(tokens, i * window, windows[i], 0, window);
        }
        return windows;
    }
}
