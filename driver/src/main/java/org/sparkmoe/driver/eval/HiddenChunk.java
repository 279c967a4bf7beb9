package org.sparkmoe.driver.eval;

/**
 * A {@link TokenChunk} on its way through a layer-sequential pass: its windows and their hidden states after some
 * layer, exact float32 (what the whole-model forward hands from one layer to the next; rounding them to bf16 would
 * change the bits of the report).
 */
public final class HiddenChunk {
    final int file;
    final int chunk;
    final int[][] windows; // [B, S]
    final float[] hidden;  // [B·S, D] row-major

    HiddenChunk(int file, int chunk, int[][] windows, float[] hidden) {
        this.file = file;
        this.chunk = chunk;
        this.windows = windows;
        this.hidden = hidden;
    }

    /** The same chunk with the next layer's hidden states. */
    HiddenChunk with(float[] next) {
        return new HiddenChunk(file, chunk, windows, next);
    }

    /** Tokens B·S. */
    int tokens() {
        return windows.length * windows[0].length;
    }
}
