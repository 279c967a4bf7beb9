package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsAction;
import org.apache.hadoop.security.AccessControlException;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.AtomicFolder;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Map;

/**
 * An output folder that appears only once complete: a job checks before Spark starts that {@code --out} does not
 * exist (or is an empty folder), then writes everything into a hidden sibling and renames it into place. The
 * checkpoint variant is {@link org.sparkmoe.model.CheckpointFolderWriter}; this one holds plain files.
 */
public final class OutputFolder {
    private OutputFolder() {
    }

    /** Throws (one line, naming the flag) when {@code dir} exists and holds anything, or cannot be created. */
    public static void requireNew(String flag, Path dir, Configuration conf) {
        requireCreatable(flag, dir, conf);
        try {
            FileSystem fs = dir.getFileSystem(conf);
            if (fs.exists(dir) && (!fs.getFileStatus(dir).isDirectory() || fs.listStatus(dir).length > 0)) {
                throw new IllegalArgumentException(flag + " " + dir + " already exists and is not an empty folder; "
                        + "choose a new folder (it is written atomically, all at once)");
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + dir + ": " + e.getMessage(), e);
        }
    }

    /**
     * Throws (one line, naming the flag) before any work when {@code target} (a file or folder a job writes at its
     * end) could not be created: its nearest existing ancestor is a file, or a folder this user cannot write in.
     */
    public static void requireCreatable(String flag, Path target, Configuration conf) {
        try {
            FileSystem fs = target.getFileSystem(conf);
            Path parent = target.getParent();
            while (parent != null && !fs.exists(parent)) {
                parent = parent.getParent();
            }
            if (parent == null) {
                return;
            }
            if (!fs.getFileStatus(parent).isDirectory()) {
                throw new IllegalArgumentException(flag + " " + target + " cannot be created: " + parent
                        + " is a file, expected a folder");
            }
            boolean writable;
            if ("file".equals(fs.getUri().getScheme())) {
                writable = java.nio.file.Files.isWritable(java.nio.file.Paths.get(fs.makeQualified(parent).toUri()));
            } else {
                try {
                    fs.access(parent, FsAction.WRITE);
                    writable = true;
                } catch (AccessControlException e) {
                    writable = false;
                }
            }
            if (!writable) {
                throw new IllegalArgumentException(flag + " " + target + " cannot be created: the folder " + parent
                        + " is not writable (read-only or permission denied)");
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + target + ": " + UserErrors.reason(e), e);
        }
    }

    /**
     * Throws (one line, naming the flag) before any work when {@code target}, the one file {@code command} writes at
     * its end, is an existing folder (a rename would not replace it) or could not be created.
     *
     * @param kind what the file holds, e.g. "JSON"
     */
    public static void requireFile(String flag, Path target, Configuration conf, String command, String kind) {
        requireCreatable(flag, target, conf);
        if (isKind(target, conf, true)) {
            throw new IllegalArgumentException(flag + " " + target + " is a folder; " + command + " writes one " + kind
                    + " file");
        }
    }

    /**
     * Throws (one line, naming the flag) before any work when {@code target}, the folder {@code command} writes into,
     * is an existing file or could not be created.
     */
    public static void requireFolder(String flag, Path target, Configuration conf, String command) {
        requireCreatable(flag, target, conf);
        if (isKind(target, conf, false)) {
            throw new IllegalArgumentException(flag + " " + target + " is a file; " + command + " writes a folder");
        }
    }

    /** Whether {@code target} exists and is a folder ({@code folder}) or a file (not {@code folder}). */
    private static boolean isKind(Path target, Configuration conf, boolean folder) {
        try {
            FileSystem fs = target.getFileSystem(conf);
            return fs.exists(target) && fs.getFileStatus(target).isDirectory() == folder;
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + target + ": " + UserErrors.reason(e), e);
        }
    }

    /** Removes {@code dir} if it is an empty folder, so that an atomic rename can put the output there. */
    public static void makeRoom(Path dir, Configuration conf) {
        try {
            FileSystem fs = dir.getFileSystem(conf);
            if (fs.exists(dir) && fs.getFileStatus(dir).isDirectory() && fs.listStatus(dir).length == 0
                    && !fs.delete(dir, false)) {
                throw new IOException("could not remove the empty folder " + dir);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("preparing " + dir + ": " + e.getMessage(), e);
        }
    }

    /** Writes {@code files} (name → content) as the new folder {@code dir}: a hidden sibling, then a rename. */
    public static void write(Path dir, Map<String, byte[]> files, Configuration conf) {
        makeRoom(dir, conf);
        AtomicFolder.write(dir, conf, "folder", (fs, staging) -> {
            for (Map.Entry<String, byte[]> file : files.entrySet()) {
                AtomicFile.write(fs, new Path(staging, file.getKey()), file.getValue());
            }
        });
    }
}
