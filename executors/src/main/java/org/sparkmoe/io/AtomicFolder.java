package org.sparkmoe.io;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSError;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

import java.io.IOException;
import java.io.UncheckedIOException;

/**
 * Writes a new folder through the Hadoop FileSystem API so that readers never see it half-written: everything goes
 * into a hidden sibling {@code .NAME.tmp-UUID}, which is renamed onto the target only once complete. The target
 * must not exist; on any failure, Errors included (an OutOfMemoryError, Hadoop's FSError for a full local disk), the
 * temporary folder is deleted. I/O failures, FSError included, are thrown as UncheckedIOExceptions naming the folder.
 */
public final class AtomicFolder {

    /** Writes the folder's files into {@code staging}. */
    @FunctionalInterface
    public interface Content {
        void writeTo(FileSystem fs, Path staging) throws IOException;
    }

    private AtomicFolder() {
    }

    /** @param what names the output in errors, e.g. "checkpoint folder" */
    public static void write(Path dir, Configuration conf, String what, Content content) {
        FileSystem fs;
        try {
            fs = dir.getFileSystem(conf);
            if (fs.exists(dir)) {
                throw new IllegalArgumentException("output " + what + " already exists: " + dir);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + dir + ": " + e.getMessage(), e);
        }
        Path staging = AtomicFile.temporaryFor(dir);
        try {
            fs.mkdirs(staging);
            content.writeTo(fs, staging);
            if (!fs.rename(staging, dir)) {
                throw new IOException("could not rename " + staging + " to " + dir);
            }
        } catch (IOException | RuntimeException | Error e) {
            try {
                fs.delete(staging, true);
            } catch (IOException | RuntimeException | FSError cleanup) {
                e.addSuppressed(cleanup);
            }
            throw AtomicFile.failure("writing " + what + " " + dir, e);
        }
    }
}
