package org.sparkmoe.tests;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Assumptions;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * A GGUF file as a reader nobody here wrote sees it: Hugging Face's npm package {@code @huggingface/gguf} (pinned),
 * installed with npm into target/gguf-reader and run with node by {@code gguf-reader/read-gguf.mjs}, which prints the
 * metadata and tensor infos as JSON. The tensors' values are then read at the offsets that reader reports. Without
 * node and npm the calling test is skipped, except under CI=true (where .ci/run installs them), where it fails.
 */
final class IndependentGgufReader {
    static final String PACKAGE = "@huggingface/gguf@0.4.6";
    private static final ObjectMapper JSON = new ObjectMapper();

    private IndependentGgufReader() {
    }

    /** What the reader sees in {@code file}: version, tensorDataOffset, metadata, tensorInfos [{name, shape, offset}]. */
    static JsonNode read(Path file) throws Exception {
        Path dir = install();
        return JSON.readTree(run(dir, List.of("node", dir.resolve("read-gguf.mjs").toString(),
                file.toAbsolutePath().toString())));
    }

    /** Tensor {@code name}'s float32 values, at the data offset and tensor offset {@code parsed} reports. */
    static float[] floats(Path file, JsonNode parsed, String name) throws IOException {
        for (JsonNode t : parsed.get("tensorInfos")) {
            if (t.get("name").asText().equals(name)) {
                long n = 1;
                for (JsonNode d : t.get("shape")) {
                    n *= d.asLong();
                }
                long at = parsed.get("tensorDataOffset").asLong() + t.get("offset").asLong();
                byte[] all = Files.readAllBytes(file);
                float[] out = new float[Math.toIntExact(n)];
                ByteBuffer.wrap(all, Math.toIntExact(at), out.length * 4).order(ByteOrder.LITTLE_ENDIAN)
                        .asFloatBuffer().get(out);
                return out;
            }
        }
        throw new AssertionError("the reader sees no tensor " + name);
    }

    private static synchronized Path install() throws Exception {
        boolean tools = onPath("node") && onPath("npm");
        if (!"true".equals(System.getenv("CI"))) {
            Assumptions.assumeTrue(tools, "node and npm are needed to run " + PACKAGE);
        } else if (!tools) {
            throw new AssertionError("CI=true but node or npm is missing: .ci/run installs them (apt nodejs npm)");
        }
        Path dir = Path.of("target", "gguf-reader").toAbsolutePath();
        Files.createDirectories(dir);
        if (!Files.exists(dir.resolve("node_modules/@huggingface/gguf/package.json"))) {
            run(dir, List.of("npm", "install", "--prefix", dir.toString(), "--no-audit", "--no-fund", PACKAGE));
        }
        try (InputStream script = IndependentGgufReader.class.getResourceAsStream("/gguf-reader/read-gguf.mjs")) {
            Files.copy(script, dir.resolve("read-gguf.mjs"), StandardCopyOption.REPLACE_EXISTING);
        }
        return dir;
    }

    private static String run(Path dir, List<String> command) throws Exception {
        Process p = new ProcessBuilder(command).directory(dir.toFile())
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(5, TimeUnit.MINUTES)) {
            p.destroyForcibly();
            throw new AssertionError(String.join(" ", command) + " did not finish in 5 minutes");
        }
        assertEquals(0, p.exitValue(), String.join(" ", command) + " failed (its stderr is in the test log):\n" + out);
        return out;
    }

    private static boolean onPath(String tool) {
        for (String d : System.getenv().getOrDefault("PATH", "").split(java.io.File.pathSeparator)) {
            if (Files.isExecutable(Path.of(d, tool))) {
                return true;
            }
        }
        return false;
    }
}
