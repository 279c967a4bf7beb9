package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.net.URI;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FSError;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.util.Progressable;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link AtomicFile}: a write replaces an existing file in one rename, leaves no temporary and no Hadoop
 * {@code .crc} side file (also removing an earlier version's stale one), keeps the old file when the content fails,
 * and {@link AtomicFile#removeStaleTemporaries} removes exactly the temporaries a cut-off write leaves.
 */
class AtomicFileTest {
    @TempDir
    Path dir;

    private static FileSystem local() throws IOException {
        return FileSystem.getLocal(new Configuration());
    }

    private List<String> names() throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            return files.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void replacesAnExistingFileAndLeavesNoSideFiles() throws IOException {
        org.apache.hadoop.fs.Path target = new org.apache.hadoop.fs.Path(dir.resolve("latest").toUri());
        Files.writeString(dir.resolve(".latest.crc"), "stale checksum of an earlier version's write");
        AtomicFile.write(local(), target, "round-000001".getBytes(StandardCharsets.UTF_8));
        AtomicFile.write(local(), target, "round-000002".getBytes(StandardCharsets.UTF_8));
        assertEquals("round-000002", Files.readString(dir.resolve("latest")));
        assertEquals(List.of("latest"), names());
        try (var in = local().open(target)) {
            assertEquals("round-000002", new String(in.readAllBytes(), StandardCharsets.UTF_8));
        }
    }

    @Test
    void aFailedWriteKeepsTheOldFile() throws IOException {
        org.apache.hadoop.fs.Path target = new org.apache.hadoop.fs.Path(dir.resolve("state").toUri());
        AtomicFile.write(local(), target, "old".getBytes(StandardCharsets.UTF_8));
        assertThrows(UncheckedIOException.class, () -> AtomicFile.write(local(), target, out -> {
            out.write('n');
            throw new IOException("disk full");
        }));
        assertEquals("old", Files.readString(dir.resolve("state")));
        assertEquals(List.of("state"), names());
    }

    /**
     * The local file system on a full disk: its output stream throws Hadoop's FSError (a java.lang.Error wrapping
     * "No space left on device") once more than {@code room} bytes have been written.
     */
    static final class FullDisk extends RawLocalFileSystem {
        private final int room;

        FullDisk(int room) throws IOException {
            this.room = room;
            initialize(URI.create("file:///"), new Configuration());
        }

        @Override
        public FSDataOutputStream create(org.apache.hadoop.fs.Path f, boolean overwrite, int bufferSize,
                short replication, long blockSize, Progressable progress) throws IOException {
            FSDataOutputStream real = super.create(f, overwrite, bufferSize, replication, blockSize, progress);
            return new FSDataOutputStream(new OutputStream() {
                private long written;

                @Override
                public void write(int b) throws IOException {
                    if (++written > room) {
                        throw fsError(new IOException("No space left on device"));
                    }
                    real.write(b);
                }

                @Override
                public void close() throws IOException {
                    real.close();
                }
            }, null);
        }
    }

    /** Hadoop's FSError, as RawLocalFileSystem's streams throw it (its constructor is package-private). */
    static FSError fsError(IOException cause) {
        try {
            var constructor = FSError.class.getDeclaredConstructor(Throwable.class);
            constructor.setAccessible(true);
            return constructor.newInstance(cause);
        } catch (ReflectiveOperationException e) {
            throw new AssertionError(e);
        }
    }

    /** A full disk used to escape as an FSError with a stack trace and leave the .tmp-* file filling the disk. */
    @Test
    void aFullDiskIsAnIoErrorNamingTheFileAndLeavesNoTemporary() throws IOException {
        org.apache.hadoop.fs.Path target = new org.apache.hadoop.fs.Path(dir.resolve("report.json").toUri());
        Files.writeString(dir.resolve("report.json"), "old");
        UncheckedIOException e = assertThrows(UncheckedIOException.class,
                () -> AtomicFile.write(new FullDisk(4), target, new byte[64]));
        assertTrue(e.getMessage().contains("report.json") && e.getMessage().contains("No space left on device"),
                e.getMessage());
        assertEquals("old", Files.readString(dir.resolve("report.json")));
        assertEquals(List.of("report.json"), names());
    }

    @Test
    void aFullDiskLeavesNoTemporaryFolder() throws IOException {
        org.apache.hadoop.fs.Path folder = new org.apache.hadoop.fs.Path(dir.resolve("adapter").toUri());
        FileSystem full = new FullDisk(4);
        Configuration conf = new Configuration();
        conf.set("fs.file.impl.disable.cache", "true");
        UncheckedIOException e = assertThrows(UncheckedIOException.class, () -> AtomicFolder.write(folder, conf,
                "adapter folder", (fs, staging) -> AtomicFile.write(full, new org.apache.hadoop.fs.Path(staging,
                        "adapter_model.safetensors"), new byte[64])));
        assertTrue(e.getMessage().contains("adapter_model.safetensors")
                && e.getMessage().contains("No space left on device"), e.getMessage());
        assertEquals(List.of(), names());
    }

    /** Errors other than FSError (an OutOfMemoryError while producing the content) propagate, temporary deleted. */
    @Test
    void anyErrorDeletesTheTemporary() throws IOException {
        org.apache.hadoop.fs.Path target = new org.apache.hadoop.fs.Path(dir.resolve("state").toUri());
        assertThrows(OutOfMemoryError.class, () -> AtomicFile.write(local(), target, out -> {
            out.write(1);
            throw new OutOfMemoryError("Java heap space");
        }));
        assertThrows(OutOfMemoryError.class, () -> AtomicFolder.write(new org.apache.hadoop.fs.Path(
                dir.resolve("model").toUri()), new Configuration(), "checkpoint folder", (fs, staging) -> {
                    AtomicFile.write(fs, new org.apache.hadoop.fs.Path(staging, "config.json"), new byte[8]);
                    throw new OutOfMemoryError("Java heap space");
                }));
        assertEquals(List.of(), names());
    }

    @Test
    void aFolderIsNotReplacedByAFile() throws IOException {
        Files.createDirectories(dir.resolve("report.json"));
        org.apache.hadoop.fs.Path target = new org.apache.hadoop.fs.Path("file:" + dir.resolve("report.json"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> AtomicFile.write(local(), target, new byte[1]));
        assertTrue(e.getMessage().contains("report.json is a folder"), e.getMessage());
        assertTrue(Files.isDirectory(dir.resolve("report.json")));
        assertEquals(List.of("report.json"), names());
    }

    @Test
    void removesOnlyTheTemporariesOfCutOffWrites() throws IOException {
        Files.writeString(dir.resolve(".latest.tmp-0b5e3a4c-1f2d-4e6a-9b7c-2d3e4f5a6b7c"), "cut off");
        Files.createDirectories(dir.resolve(".model.tmp-1b5e3a4c-1f2d-4e6a-9b7c-2d3e4f5a6b7c"));
        Files.writeString(dir.resolve(".latest.tmp-notauuid"), "someone else's");
        Files.writeString(dir.resolve("latest"), "round-000001");
        List<org.apache.hadoop.fs.Path> removed = AtomicFile.removeStaleTemporaries(local(),
                new org.apache.hadoop.fs.Path(dir.toUri()));
        assertEquals(2, removed.size());
        assertEquals(List.of(".latest.tmp-notauuid", "latest"), names());
        assertTrue(AtomicFile.removeStaleTemporaries(local(), new org.apache.hadoop.fs.Path(dir.resolve("none").toUri()))
                .isEmpty());
    }
}
