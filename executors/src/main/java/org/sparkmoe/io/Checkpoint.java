package org.sparkmoe.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The weights of a Hugging Face model folder: {@code model.safetensors}, or the shards listed in
 * {@code model.safetensors.index.json}. Every shard is opened and checked up front; every tensor
 * of the index must be in its shard and no tensor may be in two shards. Folders on a non-local
 * file system are read from this node's checkpoint cache, copied there once per file version
 * ({@link LocalFiles#cached}).
 */
public final class Checkpoint implements AutoCloseable, TensorSource {

    static final String SINGLE_FILE = "model.safetensors";
    static final String INDEX_FILE = "model.safetensors.index.json";

    private final Path dir;
    private final LocalFiles localFiles;
    private final List<SafeTensorsFile> files;
    private final Map<String, SafeTensorsFile> fileOf; // tensor name → its file, in names() order

    private Checkpoint(Path dir, LocalFiles localFiles, List<SafeTensorsFile> files,
            Map<String, SafeTensorsFile> fileOf) {
        this.dir = dir;
        this.localFiles = localFiles;
        this.files = files;
        this.fileOf = fileOf;
    }

    public static Checkpoint open(Path dir, Configuration conf) {
        FileSystem fs;
        try {
            fs = dir.getFileSystem(conf);
            if (!fs.exists(dir) || !fs.getFileStatus(dir).isDirectory()) {
                throw new CheckpointFormatException("model folder not found: " + dir);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("looking up model folder " + dir, e);
        }
        LocalFiles localFiles = LocalFiles.cached(fs, dir);
        List<SafeTensorsFile> files = new ArrayList<>();
        try {
            Map<String, SafeTensorsFile> fileOf = openFiles(fs, dir, localFiles, files);
            return new Checkpoint(dir, localFiles, files, fileOf);
        } catch (RuntimeException e) {
            closeAll(files, localFiles, e);
            throw e;
        }
    }

    /** Opens the files into {@code opened} (so the caller can close them on failure). */
    private static Map<String, SafeTensorsFile> openFiles(FileSystem fs, Path dir, LocalFiles localFiles,
            List<SafeTensorsFile> opened) {
        Path index = new Path(dir, INDEX_FILE);
        Path single = new Path(dir, SINGLE_FILE);
        Map<String, SafeTensorsFile> fileOf = new LinkedHashMap<>();
        if (exists(fs, index)) {
            ShardIndex shardIndex = ShardIndex.read(fs, index);
            Map<String, SafeTensorsFile> shards = new LinkedHashMap<>();
            for (String shardName : shardIndex.weightMap().values()) {
                if (!shards.containsKey(shardName)) {
                    SafeTensorsFile shard = localFiles.safetensors(shardName);
                    opened.add(shard);
                    shards.put(shardName, shard);
                }
            }
            checkNoTensorInTwoShards(dir, shards);
            shardIndex.weightMap().forEach((name, shardName) -> {
                SafeTensorsFile shard = shards.get(shardName);
                if (!shard.has(name)) {
                    throw new CheckpointFormatException(index + ": tensor '" + name + "' is listed in shard "
                            + shardName + ", which does not hold it");
                }
                fileOf.put(name, shard);
            });
        } else if (exists(fs, single)) {
            SafeTensorsFile file = localFiles.safetensors(SINGLE_FILE);
            opened.add(file);
            for (String name : file.names()) {
                fileOf.put(name, file);
            }
        } else {
            throw new CheckpointFormatException("no " + SINGLE_FILE + " or " + INDEX_FILE + " in " + dir);
        }
        return fileOf;
    }

    private static void checkNoTensorInTwoShards(Path dir, Map<String, SafeTensorsFile> shards) {
        Map<String, String> seenIn = new HashMap<>();
        shards.forEach((shardName, shard) -> {
            for (String name : shard.names()) {
                String other = seenIn.putIfAbsent(name, shardName);
                if (other != null) {
                    throw new CheckpointFormatException(dir + ": tensor '" + name + "' is in two shards, "
                            + other + " and " + shardName + "; expected exactly one");
                }
            }
        });
    }

    private static boolean exists(FileSystem fs, Path path) {
        try {
            return fs.exists(path);
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + path, e);
        }
    }

    @Override
    public long[] shape(String name) {
        return info(name).shape();
    }

    @Override
    public DType dtype(String name) {
        return info(name).dtype();
    }

    @Override
    public String describe() {
        return "checkpoint " + dir;
    }

    public Path dir() {
        return dir;
    }

    /** Tensor names: the index's order, or the file's order for a single file. */
    public Set<String> names() {
        return fileOf.keySet();
    }

    public boolean has(String name) {
        return fileOf.containsKey(name);
    }

    public TensorInfo info(String name) {
        return fileFor(name).info(name);
    }

    /** A new float32 'c'-order array of the tensor's shape. */
    public INDArray readFloat(String name) {
        return fileFor(name).readFloat(name);
    }

    @Override
    public INDArray stored(String name) {
        return fileFor(name).stored(name);
    }

    @Override
    public java.nio.ByteBuffer bytes(String name) {
        return fileFor(name).bytes(name);
    }

    /**
     * This checkpoint, recording in {@code pages} the mapped bytes of every tensor read through {@link #stored} and
     * {@link #bytes} (the arrays and buffers over this node's file maps; the float32 copies of readFloat are not
     * maps), so a model piece built from it can let go of its pages when dropped.
     */
    public TensorSource recording(MappedPages pages) {
        Checkpoint self = this;
        return new TensorSource() {
            @Override
            public boolean has(String name) {
                return self.has(name);
            }

            @Override
            public long[] shape(String name) {
                return self.shape(name);
            }

            @Override
            public DType dtype(String name) {
                return self.dtype(name);
            }

            @Override
            public INDArray readFloat(String name) {
                return self.readFloat(name);
            }

            @Override
            public INDArray stored(String name) {
                INDArray a = self.stored(name);
                return info(name).elementCount() == 0 ? a : pages.add(a);   // an empty tensor is a new array
            }

            @Override
            public java.nio.ByteBuffer bytes(String name) {
                return pages.add(self.bytes(name));
            }

            @Override
            public String describe() {
                return self.describe();
            }
        };
    }

    /** An I64 or I32 tensor's elements in row-major order. */
    public long[] readLongs(String name) {
        return fileFor(name).readLongs(name);
    }

    /** The local files being read: the folder's own, or their copies for a non-local folder. */
    List<java.nio.file.Path> localPaths() {
        return files.stream().map(SafeTensorsFile::path).toList();
    }

    private SafeTensorsFile fileFor(String name) {
        SafeTensorsFile file = fileOf.get(name);
        if (file == null) {
            throw new CheckpointFormatException(dir + ": tensor '" + name + "' is missing (" + fileOf.size()
                    + " tensors in the checkpoint)");
        }
        return file;
    }

    @Override
    public String toString() {
        return "Checkpoint(" + dir + ", " + fileOf.size() + " tensors in " + files.size() + " files)";
    }

    @Override
    public void close() {
        RuntimeException failure = new RuntimeException("closing checkpoint " + dir);
        closeAll(files, localFiles, failure);
        if (failure.getSuppressed().length > 0) {
            throw failure;
        }
    }

    private static void closeAll(List<SafeTensorsFile> files, LocalFiles localFiles, RuntimeException failure) {
        for (SafeTensorsFile file : files) {
            try {
                file.close();
            } catch (RuntimeException e) {
                failure.addSuppressed(e);
            }
        }
        try {
            localFiles.close();
        } catch (RuntimeException e) {
            failure.addSuppressed(e);
        }
    }
}
