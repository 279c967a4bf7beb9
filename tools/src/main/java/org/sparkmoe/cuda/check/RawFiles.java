package org.sparkmoe.cuda.check;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.StringJoiner;

/** Raw little-endian arrays (float32 or int32) in a folder, and a tiny JSON writer for the manifests. */
final class RawFiles {
    private final Path dir;

    RawFiles(Path dir) {
        this.dir = dir;
    }

    String floats(String name, float[] v) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(v);
        return write(name + ".f32", b);
    }

    String ints(String name, int[] v) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asIntBuffer().put(v);
        return write(name + ".i32", b);
    }

    private String write(String file, ByteBuffer b) throws IOException {
        try (FileChannel ch = FileChannel.open(dir.resolve(file), StandardOpenOption.CREATE,
                StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE)) {
            while (b.hasRemaining()) {
                ch.write(b);
            }
        }
        return file;
    }

    /** A JSON object of strings, numbers, nested maps and lists of those. */
    static String json(Object o) {
        if (o instanceof Map<?, ?> m) {
            StringJoiner j = new StringJoiner(", ", "{", "}");
            m.forEach((k, v) -> j.add(json(k.toString()) + ": " + json(v)));
            return j.toString();
        }
        if (o instanceof Iterable<?> list) {
            StringJoiner j = new StringJoiner(", ", "[", "]");
            list.forEach(v -> j.add(json(v)));
            return j.toString();
        }
        if (o instanceof String s) {
            return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
        }
        if (o instanceof Float || o instanceof Double) {
            return String.format(Locale.ROOT, "%.9g", ((Number) o).doubleValue());
        }
        return String.valueOf(o);
    }

    static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }
}
