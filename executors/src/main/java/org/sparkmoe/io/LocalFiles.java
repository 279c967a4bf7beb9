package org.sparkmoe.io;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Local paths for files of a folder on any Hadoop file system, so they can be memory-mapped: the
 * file itself on {@code file:}, otherwise a copy in a temporary directory that is deleted on
 * {@link #close()} or, failing that, at JVM exit.
 */
public final class LocalFiles implements AutoCloseable {

    private final FileSystem fs;
    private final Path dir;
    private final java.nio.file.Path copyDir; // null when dir is already local
    private final List<java.nio.file.Path> copies = new ArrayList<>();

    private LocalFiles(FileSystem fs, Path dir, java.nio.file.Path copyDir) {
        this.fs = fs;
        this.dir = dir;
        this.copyDir = copyDir;
    }

    public static LocalFiles of(FileSystem fs, Path dir) {
        if ("file".equals(fs.getUri().getScheme())) {
            return new LocalFiles(fs, dir, null);
        }
        try {
            java.nio.file.Path copyDir = Files.createTempDirectory("sparkmoe-checkpoint-");
            copyDir.toFile().deleteOnExit(); // registered first, so deleted after the files in it
            return new LocalFiles(fs, dir, copyDir);
        } catch (IOException e) {
            throw new UncheckedIOException("creating a local copy directory for " + dir, e);
        }
    }

    /** A local path holding the bytes of {@code dir/fileName}. */
    public java.nio.file.Path get(String fileName) {
        Path source = new Path(dir, fileName);
        if (copyDir == null) {
            return Paths.get(fs.makeQualified(source).toUri());
        }
        java.nio.file.Path copy = copyDir.resolve(fileName);
        try (InputStream in = fs.open(source)) {
            copy.toFile().deleteOnExit();
            copies.add(copy);
            Files.copy(in, copy, StandardCopyOption.REPLACE_EXISTING);
            return copy;
        } catch (FileNotFoundException e) {
            throw new CheckpointFormatException(source + ": file not found", e);
        } catch (IOException e) {
            throw new UncheckedIOException("copying " + source + " to " + copy, e);
        }
    }

    /** Deletes the copies; a no-op for a local folder. */
    @Override
    public void close() {
        if (copyDir == null) {
            return;
        }
        try {
            for (java.nio.file.Path copy : copies) {
                Files.deleteIfExists(copy);
            }
            Files.deleteIfExists(copyDir);
        } catch (IOException e) {
            throw new UncheckedIOException("deleting the local copies in " + copyDir, e);
        }
    }
}
