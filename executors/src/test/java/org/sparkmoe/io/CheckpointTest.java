package org.sparkmoe.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

class CheckpointTest {

    @TempDir
    Path tmp;

    private final Configuration conf = new Configuration();
    private final FileSystem fs = localFs(conf);

    private final INDArray embed = Nd4j.arange(12).castTo(DataType.FLOAT).reshape('c', new long[] {4, 3}); // [V, D]
    private final INDArray gate = Nd4j.arange(6).castTo(DataType.FLOAT).reshape('c', new long[] {2, 3}).neg(); // [E, D]
    private final INDArray norm = Nd4j.ones(DataType.FLOAT, 3); // [D]

    private static FileSystem localFs(Configuration conf) {
        try {
            return FileSystem.getLocal(conf);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static org.apache.hadoop.fs.Path hadoop(Path p) {
        return new org.apache.hadoop.fs.Path(p.toUri());
    }

    private void writeFile(Path file, Map<String, INDArray> tensors) {
        SafeTensorsWriter.write(fs, hadoop(file), new LinkedHashMap<>(tensors), Map.of("format", "pt"));
    }

    private static Map<String, INDArray> ordered(Object... nameThenArray) {
        Map<String, INDArray> m = new LinkedHashMap<>();
        for (int i = 0; i < nameThenArray.length; i += 2) {
            m.put((String) nameThenArray[i], (INDArray) nameThenArray[i + 1]);
        }
        return m;
    }

    private Path shardedModel(String weightMap) throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("sharded"));
        writeFile(dir.resolve("model-00001-of-00002.safetensors"), ordered("embed", embed, "norm", norm));
        writeFile(dir.resolve("model-00002-of-00002.safetensors"), ordered("gate", gate));
        Files.writeString(dir.resolve(Checkpoint.INDEX_FILE),
                "{\"metadata\": {\"total_size\": 84}, \"weight_map\": " + weightMap + "}");
        return dir;
    }

    private static final String WEIGHT_MAP = "{\"embed\": \"model-00001-of-00002.safetensors\","
            + " \"gate\": \"model-00002-of-00002.safetensors\", \"norm\": \"model-00001-of-00002.safetensors\"}";

    @Test
    void singleFileFolder() {
        Path dir = tmp.resolve("single");
        writeFile(dir.resolve(Checkpoint.SINGLE_FILE), ordered("embed", embed, "gate", gate));
        try (Checkpoint c = Checkpoint.open(hadoop(dir), conf)) {
            assertEquals(List.of("embed", "gate"), new ArrayList<>(c.names()));
            assertTrue(c.has("gate"));
            assertFalse(c.has("norm"));
            assertEquals(gate, c.readFloat("gate"));
            assertArrayEquals(new long[] {4, 3}, c.info("embed").shape());
            assertEquals(hadoop(dir), c.dir());
        }
    }

    @Test
    void shardedFolderThroughTheIndex() throws IOException {
        Path dir = shardedModel(WEIGHT_MAP);
        try (Checkpoint c = Checkpoint.open(hadoop(dir), conf)) {
            assertEquals(List.of("embed", "gate", "norm"), new ArrayList<>(c.names()));
            assertEquals(embed, c.readFloat("embed"));
            assertEquals(gate, c.readFloat("gate"));
            assertEquals(norm, c.readFloat("norm"));
            CheckpointFormatException e = assertThrows(CheckpointFormatException.class, () -> c.readFloat("lm_head"));
            assertTrue(e.getMessage().contains("tensor 'lm_head' is missing"), e.getMessage());
            assertTrue(e.getMessage().contains("sharded"), e.getMessage());
        }
    }

    @Test
    void indexNamingATensorItsShardLacks() throws IOException {
        Path dir = shardedModel("{\"embed\": \"model-00001-of-00002.safetensors\","
                + " \"gate\": \"model-00001-of-00002.safetensors\"}");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> Checkpoint.open(hadoop(dir), conf));
        assertTrue(e.getMessage().contains(Checkpoint.INDEX_FILE), e.getMessage());
        assertTrue(e.getMessage().contains("tensor 'gate' is listed in shard model-00001-of-00002.safetensors"),
                e.getMessage());
    }

    @Test
    void tensorInTwoShards() throws IOException {
        Path dir = shardedModel(WEIGHT_MAP);
        writeFile(dir.resolve("model-00002-of-00002.safetensors"), ordered("gate", gate, "norm", norm));
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> Checkpoint.open(hadoop(dir), conf));
        assertTrue(e.getMessage().contains("tensor 'norm' is in two shards, model-00001-of-00002.safetensors and "
                + "model-00002-of-00002.safetensors"), e.getMessage());
    }

    @Test
    void indexNamingAMissingShard() throws IOException {
        Path dir = shardedModel("{\"embed\": \"model-00003-of-00002.safetensors\"}");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> Checkpoint.open(hadoop(dir), conf));
        assertTrue(e.getMessage().contains("model-00003-of-00002.safetensors"), e.getMessage());
        assertTrue(e.getMessage().contains("not found"), e.getMessage());
    }

    @Test
    void indexWithoutWeightMap() throws IOException {
        Path dir = shardedModel(WEIGHT_MAP);
        Files.writeString(dir.resolve(Checkpoint.INDEX_FILE), "{\"metadata\": {}}");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> Checkpoint.open(hadoop(dir), conf));
        assertTrue(e.getMessage().contains(Checkpoint.INDEX_FILE + ": weight_map must be an object"), e.getMessage());
    }

    @Test
    void missingFolder() {
        Path dir = tmp.resolve("nowhere");
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> Checkpoint.open(hadoop(dir), conf));
        assertEquals("model folder not found: " + hadoop(dir), e.getMessage());
    }

    @Test
    void folderWithoutWeights() throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("empty"));
        CheckpointFormatException e = assertThrows(CheckpointFormatException.class,
                () -> Checkpoint.open(hadoop(dir), conf));
        assertEquals("no model.safetensors or model.safetensors.index.json in " + hadoop(dir), e.getMessage());
    }

    @Test
    void nonLocalFolderIsCopiedOnceIntoTheNodeCacheAndKept() throws IOException {
        Path dir = shardedModel(WEIGHT_MAP);
        Path cache = tmp.resolve("node-cache");
        Configuration other = new Configuration();
        other.set("fs." + OtherSchemeFileSystem.SCHEME + ".impl", OtherSchemeFileSystem.class.getName());
        other.setBoolean("fs." + OtherSchemeFileSystem.SCHEME + ".impl.disable.cache", true);
        org.apache.hadoop.fs.Path remote = new org.apache.hadoop.fs.Path(
                OtherSchemeFileSystem.SCHEME + "://" + dir.toUri().getPath());
        String before = System.getProperty(LocalFiles.CACHE_DIR_PROPERTY);
        System.setProperty(LocalFiles.CACHE_DIR_PROPERTY, cache.toString());
        try {
            List<Path> copies;
            try (Checkpoint c = Checkpoint.open(remote, other)) {
                assertEquals(embed, c.readFloat("embed"));
                assertEquals(gate, c.readFloat("gate"));
                copies = c.localPaths();
            }
            assertEquals(2, copies.size());
            List<java.nio.file.attribute.FileTime> copiedAt = new java.util.ArrayList<>();
            for (Path copy : copies) {
                assertTrue(copy.startsWith(cache), "expected a copy in the node cache " + cache + ", found " + copy);
                assertTrue(Files.exists(copy), "the copy is kept after close: " + copy);
                copiedAt.add(Files.getLastModifiedTime(copy));
            }
            try (Checkpoint again = Checkpoint.open(remote, other)) {
                assertEquals(copies, again.localPaths(), "a second open reuses the node's copies");
                assertEquals(embed, again.readFloat("embed"));
            }
            for (int i = 0; i < copies.size(); i++) {
                assertEquals(copiedAt.get(i), Files.getLastModifiedTime(copies.get(i)), "not copied again");
            }
            try (java.util.stream.Stream<Path> files = Files.list(cache)) {
                assertTrue(files.noneMatch(f -> f.toString().endsWith(".partial")), "no partial block map is left");
            }
        } finally {
            if (before == null) {
                System.clearProperty(LocalFiles.CACHE_DIR_PROPERTY);
            } else {
                System.setProperty(LocalFiles.CACHE_DIR_PROPERTY, before);
            }
        }
    }
}
