package org.sparkmoe.io;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The JSON header of a safetensors file, parsed and checked against the length of the data
 * section: known dtypes, non-negative shapes, offsets inside the data section, byte length equal
 * to dtype size times element count, no two tensors sharing a byte.
 */
record SafeTensorsHeader(Map<String, TensorInfo> tensors, Map<String, String> metadata) {

    static final String METADATA_KEY = "__metadata__";

    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    SafeTensorsHeader {
        tensors = Collections.unmodifiableMap(tensors);
        metadata = Collections.unmodifiableMap(metadata);
    }

    /**
     * @param file       names the file in messages
     * @param json       the header bytes (UTF-8 JSON, possibly padded with spaces)
     * @param dataLength bytes in the data section after the header
     */
    static SafeTensorsHeader parse(String file, byte[] json, long dataLength) {
        JsonNode root;
        try {
            root = JSON.readTree(json);
        } catch (JsonProcessingException e) {
            JsonLocation at = e.getLocation();
            throw new CheckpointFormatException(file + ": header is not valid JSON"
                    + (at == null ? "" : " at byte " + at.getByteOffset()) + ": "
                    + e.getOriginalMessage().replace('\n', ' '), e);
        } catch (IOException e) {
            throw new UncheckedIOException("parsing the header of " + file, e);
        }
        if (root == null || !root.isObject()) {
            throw new CheckpointFormatException(file + ": header must be a JSON object, found "
                    + (root == null ? "nothing" : root.getNodeType()));
        }
        Map<String, TensorInfo> tensors = new LinkedHashMap<>();
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> field = it.next();
            if (field.getKey().equals(METADATA_KEY)) {
                metadata.putAll(metadata(file, field.getValue()));
            } else {
                TensorInfo info = tensor(file, field.getKey(), field.getValue(), dataLength);
                tensors.put(info.name(), info);
            }
        }
        checkNoOverlap(file, tensors);
        return new SafeTensorsHeader(tensors, metadata);
    }

    private static Map<String, String> metadata(String file, JsonNode node) {
        if (!node.isObject()) {
            throw new CheckpointFormatException(file + ": " + METADATA_KEY
                    + " must be an object of strings, found " + node.getNodeType());
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> entry = it.next();
            if (!entry.getValue().isTextual()) {
                throw new CheckpointFormatException(file + ": " + METADATA_KEY + " entry '" + entry.getKey()
                        + "' must be a string, found " + entry.getValue().getNodeType());
            }
            metadata.put(entry.getKey(), entry.getValue().textValue());
        }
        return metadata;
    }

    private static TensorInfo tensor(String file, String name, JsonNode node, long dataLength) {
        String where = file + ": tensor '" + name + "'";
        if (!node.isObject()) {
            throw new CheckpointFormatException(where + " must be an object with dtype, shape, data_offsets, found "
                    + node.getNodeType());
        }
        JsonNode dtypeNode = node.get("dtype");
        if (dtypeNode == null || !dtypeNode.isTextual()) {
            throw new CheckpointFormatException(where + ": dtype must be a string, found " + describe(dtypeNode));
        }
        DType dtype = DType.parse(dtypeNode.textValue()).orElseThrow(() -> new CheckpointFormatException(
                where + ": unknown dtype '" + dtypeNode.textValue() + "', expected one of "
                        + List.of(DType.values())));
        long[] shape = nonNegativeLongs(where, "shape", node.get("shape"), -1);
        long[] offsets = nonNegativeLongs(where, "data_offsets", node.get("data_offsets"), 2);
        long begin = offsets[0];
        long end = offsets[1];
        if (begin > end) {
            throw new CheckpointFormatException(where + ": data_offsets begin " + begin + " > end " + end);
        }
        if (end > dataLength) {
            throw new CheckpointFormatException(where + ": data_offsets end " + end
                    + " is past the data section of " + dataLength + " bytes");
        }
        TensorInfo info = new TensorInfo(name, dtype, shape, begin, end);
        long expectedBytes;
        try {
            expectedBytes = Math.multiplyExact(info.elementCount(), dtype.byteSize());
        } catch (ArithmeticException e) {
            throw new CheckpointFormatException(where + ": shape " + node.get("shape") + " overflows a long");
        }
        if (expectedBytes != info.byteLength()) {
            throw new CheckpointFormatException(where + ": " + dtype + " " + node.get("shape") + " needs "
                    + expectedBytes + " bytes, data_offsets " + node.get("data_offsets") + " hold "
                    + info.byteLength());
        }
        return info;
    }

    /** A JSON array of non-negative integers, of length {@code length} unless that is -1. */
    private static long[] nonNegativeLongs(String where, String field, JsonNode node, int length) {
        String expected = field + " must be an array of " + (length < 0 ? "" : length + " ")
                + "non-negative integers";
        if (node == null || !node.isArray() || (length >= 0 && node.size() != length)) {
            throw new CheckpointFormatException(where + ": " + expected + ", found " + describe(node));
        }
        long[] values = new long[node.size()];
        for (int i = 0; i < values.length; i++) {
            JsonNode v = node.get(i);
            if (!v.isIntegralNumber() || !v.canConvertToLong() || v.longValue() < 0) {
                throw new CheckpointFormatException(where + ": " + expected + ", found " + node);
            }
            values[i] = v.longValue();
        }
        return values;
    }

    private static String describe(JsonNode node) {
        return node == null ? "nothing" : node.toString();
    }

    private static void checkNoOverlap(String file, Map<String, TensorInfo> tensors) {
        List<TensorInfo> byBegin = new ArrayList<>();
        for (TensorInfo t : tensors.values()) {
            if (t.byteLength() > 0) {
                byBegin.add(t);
            }
        }
        byBegin.sort(Comparator.comparingLong(TensorInfo::begin));
        for (int i = 1; i < byBegin.size(); i++) {
            TensorInfo previous = byBegin.get(i - 1);
            TensorInfo current = byBegin.get(i);
            if (current.begin() < previous.end()) {
                throw new CheckpointFormatException(file + ": tensors '" + previous.name() + "' bytes ["
                        + previous.begin() + ", " + previous.end() + ") and '" + current.name() + "' bytes ["
                        + current.begin() + ", " + current.end() + ") overlap; expected disjoint ranges");
            }
        }
    }
}
