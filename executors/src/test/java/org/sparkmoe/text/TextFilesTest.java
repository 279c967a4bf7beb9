package org.sparkmoe.text;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Through Hadoop's local file system ({@code file:} URIs), as executors read HDFS or S3. */
class TextFilesTest {

    private static final Configuration CONF = new Configuration();

    @Test
    void readsUtf8(@TempDir java.nio.file.Path dir) throws IOException {
        java.nio.file.Path f = dir.resolve("a.txt");
        String text = "Héllo 中文 😀\n\ttab";
        Files.writeString(f, text, StandardCharsets.UTF_8);
        assertEquals(text, TextFiles.readUtf8(new Path(f.toUri()), CONF));
        assertEquals(text, TextFiles.readUtf8(f.toString()));
    }

    @Test
    void missingFile(@TempDir java.nio.file.Path dir) {
        Path p = new Path(dir.resolve("missing.txt").toUri());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TextFiles.readUtf8(p, CONF));
        assertEquals("data file not found: " + p, e.getMessage());
    }

    @Test
    void emptyFile(@TempDir java.nio.file.Path dir) throws IOException {
        java.nio.file.Path f = Files.createFile(dir.resolve("empty.txt"));
        Path p = new Path(f.toUri());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TextFiles.readUtf8(p, CONF));
        assertEquals("data file is empty: " + p, e.getMessage());
    }

    @Test
    void invalidUtf8(@TempDir java.nio.file.Path dir) throws IOException {
        java.nio.file.Path f = dir.resolve("latin1.txt");
        Files.write(f, new byte[] {'c', 'a', 'f', (byte) 0xE9, '\n'}); // "café" in ISO-8859-1
        Path p = new Path(f.toUri());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TextFiles.readUtf8(p, CONF));
        assertEquals("data file is not valid UTF-8: " + p + " (first malformed byte at offset 3)",
                e.getMessage());
    }

    @Test
    void directoryIsRejected(@TempDir java.nio.file.Path dir) {
        Path p = new Path(dir.toUri());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TextFiles.readUtf8(p, CONF));
        assertEquals("data file is a directory, expected a text file: " + p, e.getMessage());
    }

    /**
     * The driver's streaming check agrees with the whole-file read: a valid 4-byte character straddling every
     * position of the decoder's 64 KiB buffer boundary passes, and a malformed byte is found at its offset.
     */
    @Test
    void streamingCheckAcrossTheBufferBoundary(@TempDir java.nio.file.Path dir) throws IOException {
        for (int pad = (1 << 16) - 4; pad <= 1 << 16; pad++) {
            java.nio.file.Path f = dir.resolve("ok-" + pad + ".txt");
            Files.writeString(f, "x".repeat(pad) + "\uD83D\uDE00 end", StandardCharsets.UTF_8);
            TextFiles.requireUtf8Text(new Path(f.toUri()), CONF);
        }
        java.nio.file.Path bad = dir.resolve("bad.txt");
        byte[] bytes = ("x".repeat((1 << 16) + 10) + "\u00e9").getBytes(StandardCharsets.ISO_8859_1);
        Files.write(bad, bytes);
        Path p = new Path(bad.toUri());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TextFiles.requireUtf8Text(p, CONF));
        assertEquals("data file is not valid UTF-8: " + p + " (first malformed byte at offset " + ((1 << 16) + 10)
                + ")", e.getMessage());
    }
}
