package org.sparkmoe.driver.eval;

/**
 * The unit of scoring work: up to B consecutive windows of one file, forwarded together. Its composition
 * depends only on the file and the batch size, never on partitioning, so results do not either.
 */
public final class TokenChunk {
    final int file;
    final int chunk;
    final int[][] windows; // [B, S]

    TokenChunk(int file, int chunk, int[][] windows) {
        this.file = file;
        this.chunk = chunk;
        this.windows = windows;
    }
}
