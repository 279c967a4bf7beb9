package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileAlreadyExistsException;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.sparkmoe.io.AtomicFile;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.time.Instant;

/**
 * An exclusive lock on an output folder that a run writes into over time (train): {@code OUT/.sparkmoe.lock},
 * created atomically (O_EXCL on the local disk, a non-overwriting create elsewhere), holding
 * {@code host pid command start-time}. A lock whose process is gone on this host is stale and taken over; one held
 * on another host is refused, naming the file to remove if that run is gone. Released on close.
 */
public final class OutputLock implements AutoCloseable {
    public static final String FILE = ".sparkmoe.lock";

    private final FileSystem fs;
    private final Path file;
    private final String holder;

    private OutputLock(FileSystem fs, Path file, String holder) {
        this.fs = fs;
        this.file = file;
        this.holder = holder;
    }

    /** Takes the lock on {@code out} (creating the folder), or throws one line naming who holds it. */
    public static OutputLock acquire(Path out, Configuration conf, String command) {
        Path file = new Path(out, FILE);
        String me = host() + " " + ProcessHandle.current().pid() + " " + command + " " + Instant.now();
        try {
            FileSystem fs = AtomicFile.withoutChecksumFiles(out.getFileSystem(conf));
            fs.mkdirs(out);
            for (int attempt = 0; attempt < 2; attempt++) {
                if (createExclusive(fs, file, me)) {
                    return new OutputLock(fs, file, me);
                }
                String held = read(fs, file);
                if (!isStaleHere(held)) {
                    throw new IllegalArgumentException("--out " + out + " is in use by " + describe(held)
                            + "; wait for it to finish, or remove " + file + " if that run is gone");
                }
                System.err.println(command + ": taking over the lock of a run that is gone (" + describe(held) + ")");
                fs.delete(file, false);
            }
            throw new IllegalArgumentException("--out " + out + ": another run took the lock " + file + " just now");
        } catch (IOException e) {
            throw new UncheckedIOException("locking --out " + out + ": " + e.getMessage(), e);
        }
    }

    @Override
    public void close() {
        try {
            if (holder.equals(read(fs, file))) {
                fs.delete(file, false);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("releasing the lock " + file + ": " + e.getMessage(), e);
        }
    }

    private static boolean createExclusive(FileSystem fs, Path file, String content) throws IOException {
        byte[] bytes = (content + "\n").getBytes(StandardCharsets.UTF_8);
        if (fs instanceof RawLocalFileSystem local) {
            try {
                Files.write(local.pathToFile(file).toPath(), bytes, java.nio.file.StandardOpenOption.CREATE_NEW,
                        java.nio.file.StandardOpenOption.WRITE);
                return true;
            } catch (java.nio.file.FileAlreadyExistsException e) {
                return false;
            }
        }
        try (FSDataOutputStream out = fs.create(file, false)) {
            out.write(bytes);
            return true;
        } catch (FileAlreadyExistsException e) {
            return false;
        }
    }

    /** The holder line, or "" when the file is gone or still being written. */
    private static String read(FileSystem fs, Path file) throws IOException {
        try (var in = fs.open(file)) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8).trim();
        } catch (java.io.FileNotFoundException e) {
            return "";
        }
    }

    /** Held on this host by a process that no longer runs. */
    static boolean isStaleHere(String held) {
        String[] f = held.split(" ");
        if (f.length < 2 || !f[0].equals(host())) {
            return false;
        }
        try {
            return ProcessHandle.of(Long.parseLong(f[1])).map(p -> !p.isAlive()).orElse(true);
        } catch (NumberFormatException e) {
            return false;
        }
    }

    private static String describe(String held) {
        String[] f = held.split(" ");
        return f.length < 4 ? "another run (" + (held.isEmpty() ? "starting" : held) + ")"
                : f[2] + " (pid " + f[1] + " on " + f[0] + ", since " + f[3] + ")";
    }

    private static String host() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (UnknownHostException e) {
            return "localhost";
        }
    }
}
