package org.sparkmoe.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/** The {@code weight_map} of a Hugging Face {@code model.safetensors.index.json}: tensor name → shard file name. */
record ShardIndex(Map<String, String> weightMap) {

    private static final ObjectMapper JSON = new ObjectMapper();

    static ShardIndex read(FileSystem fs, Path indexFile) {
        JsonNode root;
        try (InputStream in = fs.open(indexFile)) {
            root = JSON.readTree(in);
        } catch (JsonProcessingException e) {
            throw new CheckpointFormatException(indexFile + ": not valid JSON: "
                    + e.getOriginalMessage().replace('\n', ' '), e);
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + indexFile, e);
        }
        JsonNode weightMap = root == null ? null : root.get("weight_map");
        if (weightMap == null || !weightMap.isObject()) {
            throw new CheckpointFormatException(indexFile + ": weight_map must be an object of tensor name to shard"
                    + " file, found " + (weightMap == null ? "nothing" : weightMap.getNodeType()));
        }
        Map<String, String> shardOf = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = weightMap.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> entry = it.next();
            JsonNode shard = entry.getValue();
            if (!shard.isTextual() || shard.textValue().isEmpty() || shard.textValue().contains("/")
                    || shard.textValue().equals("..")) {
                throw new CheckpointFormatException(indexFile + ": weight_map entry '" + entry.getKey()
                        + "' must name a file in the model folder, found " + shard);
            }
            shardOf.put(entry.getKey(), shard.textValue());
        }
        return new ShardIndex(shardOf);
    }
}
