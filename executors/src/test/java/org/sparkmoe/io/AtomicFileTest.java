package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
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
