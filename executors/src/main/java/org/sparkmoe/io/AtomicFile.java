package org.sparkmoe.io;

import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.util.UUID;

/**
 * Writes a file through the Hadoop FileSystem API so that readers never see it half-written: the
 * content goes to a hidden sibling {@code .NAME.tmp-UUID}, which is renamed onto the target only once
 * complete. On any failure the temporary file is deleted and an existing target is left as it was.
 */
public final class AtomicFile {

    /** Produces the file's content. */
    @FunctionalInterface
    public interface Content {
        void writeTo(OutputStream out) throws IOException;
    }

    private AtomicFile() {
    }

    public static void write(FileSystem fs, Path target, Content content) {
        Path temporary = new Path(target.getParent(), "." + target.getName() + ".tmp-" + UUID.randomUUID());
        try {
            try (OutputStream out = fs.create(temporary, false)) {
                content.writeTo(out);
            }
            if (fs.exists(target) && !fs.delete(target, false)) {
                throw new IOException("could not delete the existing " + target);
            }
            if (!fs.rename(temporary, target)) {
                throw new IOException("could not rename " + temporary + " to " + target);
            }
        } catch (IOException | RuntimeException e) {
            deleteQuietly(fs, temporary, e);
            if (e instanceof IOException io) {
                throw new UncheckedIOException("writing " + target + ": " + io.getMessage(), io);
            }
            throw (RuntimeException) e;
        }
    }

    public static void write(FileSystem fs, Path target, byte[] bytes) {
        write(fs, target, out -> out.write(bytes));
    }

    private static void deleteQuietly(FileSystem fs, Path temporary, Exception cause) {
        try {
            fs.delete(temporary, false);
        } catch (IOException | RuntimeException e) {
            cause.addSuppressed(e);
        }
    }
}
