package org.sparkmoe.driver.train;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** This JVM's anonymous resident memory (heap, ND4J buffers, scratch; not the memory-mapped weights) and its heap. */
final class ProcessMemory {
    private static final Path STATUS = Path.of("/proc/self/status");

    private ProcessMemory() {
    }

    /** RssAnon of /proc/self/status in bytes; −1 where the file or the field is missing (not Linux). */
    static long rssAnonBytes() {
        try {
            for (String line : Files.readAllLines(STATUS)) {
                if (line.startsWith("RssAnon:")) {
                    return Long.parseLong(line.substring("RssAnon:".length()).replace("kB", "").trim()) * 1024;
                }
            }
        } catch (IOException | NumberFormatException e) {
            return -1;
        }
        return -1;
    }

    /** The bytes the JVM has committed to its heap now (part of {@link #rssAnonBytes()} once touched). */
    static long heapCommittedBytes() {
        return Runtime.getRuntime().totalMemory();
    }
}
