package org.sparkmoe.driver.train;

/**
 * One partition's training windows: window i of the run (files in --data order, windows in file order) belongs
 * to partition i mod P, kept in increasing i. Depends only on the data, the window length and P.
 */
public final class WindowShard {
    final int partition;
    final int[][] windows; // [N, S]

    WindowShard(int partition, int[][] windows) {
        this.partition = partition;
        this.windows = windows;
    }
}
