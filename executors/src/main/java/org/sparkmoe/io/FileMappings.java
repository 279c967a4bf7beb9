package org.sparkmoe.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The read-only memory maps of the safetensors files this JVM computes with: one set per file version (path, length,
 * modification time), shared by every task of the JVM and, through the page cache, by every JVM on the node. Kept for
 * the JVM's life: arrays over them hold raw addresses, so a map must outlive every array made from it (its pages are
 * file-backed, so the kernel reclaims them under pressure without swapping).
 *
 * <p>A map covers a run of whole tensors up to {@link SafeTensorsFile#PIECE_BYTES} (a {@link MappedByteBuffer} holds
 * at most 2 GiB; runs keep the number of maps far below the kernel's {@code vm.max_map_count} even for checkpoints
 * of tens of thousands of tensors). A tensor larger than a run gets its own map, and one over 2 GiB cannot be mapped.
 */
final class FileMappings {
    private static final Map<String, FileMappings> BY_VERSION = new ConcurrentHashMap<>();

    private record Run(long start, long length) {
    }

    private final List<Run> runs = new ArrayList<>();
    private final Map<String, Integer> runOf = new HashMap<>();
    private final MappedByteBuffer[] mapped;

    private FileMappings(Path file, SafeTensorsHeader header, long dataStart, long pieceBytes) {
        List<TensorInfo> byPosition = new ArrayList<>(header.tensors().values());
        byPosition.sort(Comparator.comparingLong(TensorInfo::begin));
        for (TensorInfo t : byPosition) {
            if (t.byteLength() > Integer.MAX_VALUE) {
                continue;  // bytes() refuses it by name
            }
            long begin = dataStart + t.begin();
            Run last = runs.isEmpty() ? null : runs.get(runs.size() - 1);
            if (last != null && begin + t.byteLength() - last.start <= pieceBytes && begin >= last.start) {
                runs.set(runs.size() - 1, new Run(last.start, Math.max(last.length, begin + t.byteLength() - last.start)));
            } else {
                runs.add(new Run(begin, t.byteLength()));
            }
            runOf.put(t.name(), runs.size() - 1);
        }
        this.mapped = new MappedByteBuffer[runs.size()];
    }

    /** The maps of {@code file} as it is now (a file rewritten in place is mapped afresh). */
    static FileMappings of(Path file, SafeTensorsHeader header, long dataStart, long pieceBytes) {
        String version;
        try {
            version = file.toRealPath() + " " + Files.size(file) + " " + Files.getLastModifiedTime(file).toMillis();
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + file, e);
        }
        return BY_VERSION.computeIfAbsent(version, v -> new FileMappings(file, header, dataStart, pieceBytes));
    }

    /** The tensor's bytes, little-endian, in a map shared by every caller; {@code channel} maps its run if needed. */
    ByteBuffer bytes(Path file, FileChannel channel, TensorInfo info, long dataStart) {
        Integer run = runOf.get(info.name());
        if (run == null) {
            throw new CheckpointFormatException(file + ": tensor '" + info.name() + "' is " + info.byteLength()
                    + " bytes; tensors over 2 GiB cannot be memory-mapped (re-save the checkpoint with its experts "
                    + "per tensor, or in smaller shards)");
        }
        MappedByteBuffer map = map(run, file, channel);
        long from = dataStart + info.begin() - runs.get(run).start;
        return map.slice((int) from, (int) info.byteLength()).order(ByteOrder.LITTLE_ENDIAN);
    }

    private synchronized MappedByteBuffer map(int run, Path file, FileChannel channel) {
        if (mapped[run] == null) {
            Run r = runs.get(run);
            try {
                mapped[run] = channel.map(FileChannel.MapMode.READ_ONLY, r.start, r.length);
            } catch (IOException e) {
                throw new UncheckedIOException("memory-mapping bytes " + r.start + ".." + (r.start + r.length)
                        + " of " + file, e);
            }
        }
        return mapped[run];
    }
}
