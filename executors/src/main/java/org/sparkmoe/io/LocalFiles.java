package org.sparkmoe.io;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Local paths for files of a folder on any Hadoop file system, so they can be memory-mapped: the file itself on
 * {@code file:}, otherwise a copy. Two lifetimes: {@link #of} copies into a temporary directory deleted on
 * {@link #close()} (small files read once: adapters, training states, statistics); {@link #cached} copies into this
 * node's checkpoint cache, once per file version, shared by every task and JVM of the node (checkpoints, whose
 * weights stay mapped for the JVM's life).
 *
 * <p>The cache is the directory of the system property {@value #CACHE_DIR_PROPERTY} or the environment variable
 * {@code SPARKMOE_CACHE_DIR}, else {@code sparkmoe-checkpoint-cache} in {@code java.io.tmpdir}. A copy is named
 * after a hash of the source URI, length and modification time, so a rewritten source gets a new copy. A copy is a
 * {@link SparseCopy}: the bytes of a tensor are copied the first time a task of the node reads it, so a pass over one
 * layer copies that layer, not the model. Copies are not deleted: JVMs map them for their whole life; the directory
 * is the operator's to clean.
 */
public final class LocalFiles implements AutoCloseable {
    public static final String CACHE_DIR_PROPERTY = "sparkmoe.cache.dir";
    private static final Map<String, SparseCopy> COPIES = new ConcurrentHashMap<>(); // one per node-cache file

    private final FileSystem fs;
    private final Path dir;
    private final java.nio.file.Path copyDir;   // null when dir is already local
    private final boolean nodeCache;            // copyDir is the node's cache: copies are kept
    private final List<java.nio.file.Path> copies = new ArrayList<>();

    private LocalFiles(FileSystem fs, Path dir, java.nio.file.Path copyDir, boolean nodeCache) {
        this.fs = fs;
        this.dir = dir;
        this.copyDir = copyDir;
        this.nodeCache = nodeCache;
    }

    /** Temporary copies for a non-local folder, deleted on close. */
    public static LocalFiles of(FileSystem fs, Path dir) {
        if (isLocal(fs)) {
            return new LocalFiles(fs, dir, null, false);
        }
        try {
            java.nio.file.Path copyDir = Files.createTempDirectory("sparkmoe-checkpoint-");
            copyDir.toFile().deleteOnExit(); // registered first, so deleted after the files in it
            return new LocalFiles(fs, dir, copyDir, false);
        } catch (IOException e) {
            throw new UncheckedIOException("creating a local copy directory for " + dir, e);
        }
    }

    /** Copies for a non-local folder in the node's checkpoint cache, made once per file version and kept. */
    public static LocalFiles cached(FileSystem fs, Path dir) {
        return new LocalFiles(fs, dir, isLocal(fs) ? null : cacheDir(), true);
    }

    private static boolean isLocal(FileSystem fs) {
        return "file".equals(fs.getUri().getScheme());
    }

    /** Where this node keeps its copies of non-local checkpoints. */
    static java.nio.file.Path cacheDir() {
        String configured = System.getProperty(CACHE_DIR_PROPERTY, System.getenv("SPARKMOE_CACHE_DIR"));
        return configured != null && !configured.isBlank() ? Paths.get(configured)
                : Paths.get(System.getProperty("java.io.tmpdir"), "sparkmoe-checkpoint-cache");
    }

    /** A local path holding the bytes of {@code dir/fileName}: the file itself, or a temporary copy. */
    public java.nio.file.Path get(String fileName) {
        if (nodeCache && copyDir != null) {
            throw new IllegalStateException("the node cache fills its copies on demand: open them with safetensors()");
        }
        Path source = new Path(dir, fileName);
        return copyDir == null ? Paths.get(fs.makeQualified(source).toUri()) : temporaryCopy(source, fileName);
    }

    /**
     * The safetensors file {@code dir/fileName}, opened over a local path: the file itself, a temporary copy, or this
     * node's {@link SparseCopy} (whose tensors are copied the first time any task of the node reads them).
     */
    SafeTensorsFile safetensors(String fileName) {
        return nodeCache && copyDir != null ? cachedFile(fileName, SparseCopy.BLOCK_BYTES)
                : SafeTensorsFile.open(get(fileName));
    }

    /** As {@link #safetensors}, for the node cache, copying in blocks of {@code blockBytes}. */
    SafeTensorsFile cachedFile(String fileName, int blockBytes) {
        Path source = new Path(dir, fileName);
        FileStatus status;
        try {
            status = fs.getFileStatus(source);
        } catch (FileNotFoundException e) {
            throw new CheckpointFormatException(source + ": file not found", e);
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + source, e);
        }
        String version = fs.makeQualified(source) + " " + status.getLen() + " " + status.getModificationTime();
        java.nio.file.Path copy = copyDir.resolve(hash(version) + "-" + fileName);
        SparseCopy sparse = COPIES.computeIfAbsent(copy.toString(),
                k -> new SparseCopy(fs, source, copy, status.getLen(), blockBytes));
        return SafeTensorsFile.open(sparse.path(), sparse);
    }

    private java.nio.file.Path temporaryCopy(Path source, String fileName) {
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

    private static String hash(String text) {
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(digest, 0, 12);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
    }

    /** Deletes the temporary copies; a no-op for a local folder and for the node's cache. */
    @Override
    public void close() {
        if (copyDir == null || nodeCache) {
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
