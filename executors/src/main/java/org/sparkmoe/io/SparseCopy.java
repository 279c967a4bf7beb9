package org.sparkmoe.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.BitSet;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;

/**
 * This node's copy of one file of a non-local file system, filled block by block as readers ask for byte ranges:
 * a sparse local file of the source's length (unfilled blocks are holes, no disk) and a block map beside it, one
 * byte per block of {@code blockBytes}, set once the block's bytes are on disk. A layer-sequential pass that maps
 * layer l of a 1 TB model thus copies that layer's tensors (plus the rest of their first and last blocks), not the
 * shards holding them. {@link #fill} copies the missing blocks of a range with positioned reads of the source under
 * this JVM's monitor and the node's file lock, forces them to disk, then marks them, so every task and JVM of the node
 * copies a block once and a marked block is complete even after a crash. Readers map the local file read-only and
 * shared, so bytes written later by any JVM of the node are what their maps show.
 */
final class SparseCopy implements ByteRanges {
    /** Block of a copy: ranges are rounded out to whole blocks, so one read covers many small tensors. */
    static final int BLOCK_BYTES = 16 << 20;

    private final FileSystem fs;
    private final org.apache.hadoop.fs.Path source;
    private final Path copy;
    private final Path blockMap;
    private final Path lockFile;
    private final long length;
    private final int blockBytes;
    private final BitSet filled = new BitSet();   // blocks this JVM knows are on disk; guarded by this

    SparseCopy(FileSystem fs, org.apache.hadoop.fs.Path source, Path copy, long length, int blockBytes) {
        this.fs = fs;
        this.source = source;
        this.copy = copy;
        this.blockMap = copy.resolveSibling(copy.getFileName() + ".blocks");
        this.lockFile = copy.resolveSibling(copy.getFileName() + ".lock");
        this.length = length;
        this.blockBytes = blockBytes;
    }

    /** The local file; bytes of a range are valid once {@link #fill} returned for it. */
    Path path() {
        createOnce();
        return copy;
    }

    /** Makes bytes [from, to) of the copy equal the source's, copying the blocks no JVM of the node copied yet. */
    @Override
    public synchronized void fill(long from, long to) {
        if (to <= from) {
            return;
        }
        int first = (int) (from / blockBytes);
        int last = (int) ((Math.min(to, length) - 1) / blockBytes);
        if (filled.nextClearBit(first) > last) {
            return;
        }
        try (FileChannel lockChannel = FileChannel.open(lockFile, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
             FileLock ignored = lockChannel.lock();
             FileChannel map = FileChannel.open(blockMap, StandardOpenOption.READ, StandardOpenOption.WRITE);
             FileChannel data = FileChannel.open(copy, StandardOpenOption.WRITE)) {
            readMarks(map);
            BitSet copied = new BitSet();
            try (FSDataInputStream in = fs.open(source)) {
                for (int b = filled.nextClearBit(first); b <= last; b = filled.nextClearBit(b + 1)) {
                    copyBlock(in, data, b);
                    copied.set(b);
                }
            }
            data.force(false);
            for (int b = copied.nextSetBit(0); b >= 0; b = copied.nextSetBit(b + 1)) {
                map.write(ByteBuffer.wrap(new byte[] {1}), b);
            }
            map.force(false);
            filled.or(copied);
        } catch (IOException e) {
            throw new UncheckedIOException("copying bytes " + from + ".." + to + " of " + source
                    + " into the node's checkpoint cache " + copy.getParent() + " (set -D"
                    + LocalFiles.CACHE_DIR_PROPERTY + " or SPARKMOE_CACHE_DIR to move it)", e);
        }
    }

    /** Blocks of the whole copy not on disk yet (a test's view of what was copied). */
    synchronized int missingBlocks() {
        try (FileChannel map = FileChannel.open(blockMap, StandardOpenOption.READ)) {
            readMarks(map);
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + blockMap, e);
        }
        return blocks() - filled.cardinality();
    }

    private int blocks() {
        return (int) ((length + blockBytes - 1) / blockBytes);
    }

    private void readMarks(FileChannel map) throws IOException {
        ByteBuffer marks = ByteBuffer.allocate(blocks());
        while (marks.hasRemaining() && map.read(marks, marks.position()) > 0) {
            // reads the whole map
        }
        for (int b = 0; b < marks.position(); b++) {
            if (marks.get(b) != 0) {
                filled.set(b);
            }
        }
    }

    private void copyBlock(FSDataInputStream in, FileChannel data, int block) throws IOException {
        long start = (long) block * blockBytes;
        byte[] bytes = new byte[(int) Math.min(blockBytes, length - start)];
        in.readFully(start, bytes);
        ByteBuffer buffer = ByteBuffer.wrap(bytes);
        while (buffer.hasRemaining()) {
            data.write(buffer, start + buffer.position());
        }
    }

    /** Creates the sparse file of the source's length and its empty block map, once per node (under the lock). */
    private synchronized void createOnce() {
        if (Files.exists(blockMap)) {
            return;
        }
        try {
            Files.createDirectories(copy.getParent());
            try (FileChannel lockChannel = FileChannel.open(lockFile, StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE); FileLock ignored = lockChannel.lock()) {
                if (Files.exists(blockMap)) {
                    return;
                }
                try (java.io.RandomAccessFile file = new java.io.RandomAccessFile(copy.toFile(), "rw")) {
                    file.setLength(length);   // a hole: no disk until blocks are written
                }
                Path partial = blockMap.resolveSibling(blockMap.getFileName() + ".partial");
                Files.write(partial, new byte[0]);
                Files.move(partial, blockMap, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("creating " + copy + " in the node's checkpoint cache (set -D"
                    + LocalFiles.CACHE_DIR_PROPERTY + " or SPARKMOE_CACHE_DIR to move it)", e);
        }
    }
}
