package org.sparkmoe.io;

import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FSError;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Options;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.hdfs.DistributedFileSystem;

import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.regex.Pattern;

/**
 * Writes a file through the Hadoop FileSystem API so that readers never see it half-written: the
 * content goes to a hidden sibling {@code .NAME.tmp-UUID}, which replaces the target in one rename only once
 * complete (readers see the old file or the new one, never neither). On any failure, Errors included (an
 * OutOfMemoryError, Hadoop's {@link FSError} for a full local disk), the temporary file is deleted and an existing
 * target is left as it was; an I/O failure, FSError included, is thrown as an UncheckedIOException naming the target.
 * A target that is a folder is refused (a rename would not replace it). On the local disk the bytes are written without Hadoop's {@code .crc}
 * side files (checksums that matter are kept in the outputs' own metadata).
 */
public final class AtomicFile {
    /** The names {@link #write} and {@link AtomicFolder} give their temporaries: {@code .NAME.tmp-UUID}. */
    private static final Pattern TEMPORARY = Pattern.compile("\\..+\\.tmp-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}"
            + "-[0-9a-f]{4}-[0-9a-f]{12}");

    /** Produces the file's content. */
    @FunctionalInterface
    public interface Content {
        void writeTo(OutputStream out) throws IOException;
    }

    private AtomicFile() {
    }

    public static void write(FileSystem fs, Path target, Content content) {
        FileSystem raw = withoutChecksumFiles(fs);
        requireNotAFolder(raw, target);
        Path temporary = temporaryFor(target);
        try {
            try (OutputStream out = raw.create(temporary, false)) {
                content.writeTo(out);
            }
            replace(raw, temporary, target);
        } catch (IOException | RuntimeException | Error e) {
            deleteQuietly(raw, temporary, e);
            throw failure("writing " + target, e);
        }
    }

    private static void requireNotAFolder(FileSystem fs, Path target) {
        boolean folder;
        try {
            folder = fs.exists(target) && fs.getFileStatus(target).isDirectory();
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + target + ": " + e.getMessage(), e);
        }
        if (folder) {
            throw new IllegalArgumentException(target + " is a folder; expected a file to write");
        }
    }

    /**
     * What a failed write throws: an I/O failure, and Hadoop's FSError (an Error the local file system throws for
     * an IOException such as "No space left on device"), as an UncheckedIOException whose message starts with
     * {@code doing}; a RuntimeException as it is. Any other Error is rethrown here.
     */
    static RuntimeException failure(String doing, Throwable e) {
        if (e instanceof FSError fsError) {
            IOException io = fsError.getCause() instanceof IOException cause ? cause
                    : new IOException(fsError.getMessage(), fsError);
            UncheckedIOException unchecked = new UncheckedIOException(doing + ": " + io.getMessage(), io);
            for (Throwable s : fsError.getSuppressed()) {
                unchecked.addSuppressed(s);
            }
            return unchecked;
        }
        if (e instanceof UncheckedIOException unchecked) {
            return unchecked;
        }
        if (e instanceof IOException io) {
            return new UncheckedIOException(doing + ": " + io.getMessage(), io);
        }
        if (e instanceof RuntimeException r) {
            return r;
        }
        throw (Error) e;
    }

    public static void write(FileSystem fs, Path target, byte[] bytes) {
        write(fs, target, out -> out.write(bytes));
    }

    /** The hidden sibling a write of {@code target} goes through. */
    static Path temporaryFor(Path target) {
        return new Path(target.getParent(), "." + target.getName() + ".tmp-" + UUID.randomUUID());
    }

    /** The local file system's raw form writes the bytes alone, without a {@code .crc} side file; others as given. */
    public static FileSystem withoutChecksumFiles(FileSystem fs) {
        return fs instanceof LocalFileSystem local ? local.getRawFileSystem() : fs;
    }

    /**
     * Moves {@code temporary} onto {@code target} in one step, replacing a target that exists: rename(2) on the local
     * disk, HDFS's overwriting rename on HDFS. Stores without an atomic overwriting rename (object stores) get
     * delete-then-rename.
     */
    static void replace(FileSystem fs, Path temporary, Path target) throws IOException {
        if (fs instanceof RawLocalFileSystem local) {
            java.nio.file.Path to = local.pathToFile(target).toPath();
            Files.move(local.pathToFile(temporary).toPath(), to, StandardCopyOption.ATOMIC_MOVE);
            Files.deleteIfExists(to.resolveSibling("." + to.getFileName() + ".crc")); // an earlier version's checksum
            return;
        }
        if (fs instanceof DistributedFileSystem hdfs) {
            hdfs.rename(temporary, target, Options.Rename.OVERWRITE);
            return;
        }
        if (fs.exists(target) && !fs.delete(target, false)) {
            throw new IOException("could not delete the existing " + target);
        }
        if (!fs.rename(temporary, target)) {
            throw new IOException("could not rename " + temporary + " to " + target);
        }
    }

    /**
     * Deletes the temporaries ({@code .NAME.tmp-UUID}) that writes killed before their rename left in {@code dir};
     * call only while no other writer uses the folder (a run holding its output's lock).
     *
     * @return the paths removed
     */
    public static List<Path> removeStaleTemporaries(FileSystem fs, Path dir) {
        List<Path> removed = new ArrayList<>();
        try {
            if (!fs.exists(dir)) {
                return removed;
            }
            for (FileStatus status : fs.listStatus(dir)) {
                if (TEMPORARY.matcher(status.getPath().getName()).matches() && fs.delete(status.getPath(), true)) {
                    removed.add(status.getPath());
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("removing stale temporary files in " + dir + ": " + e.getMessage(), e);
        }
        return removed;
    }

    private static void deleteQuietly(FileSystem fs, Path temporary, Throwable cause) {
        try {
            fs.delete(temporary, false);
        } catch (IOException | RuntimeException | FSError e) {
            cause.addSuppressed(e);
        }
    }
}
