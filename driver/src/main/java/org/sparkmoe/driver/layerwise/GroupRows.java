package org.sparkmoe.driver.layerwise;

/**
 * One expert group's share of an MoE layer for one chunk: the routed rows its experts own, before their routing
 * weights, [N_g, D] in plan order (exact float32); the rows of every group in group order are the plan's rows.
 */
public final class GroupRows {
    final int file;
    final int chunk;
    final float[] rows; // [N_g, D]

    GroupRows(int file, int chunk, float[] rows) {
        this.file = file;
        this.chunk = chunk;
        this.rows = rows;
    }
}
