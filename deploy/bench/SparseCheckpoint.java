import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.ModelShape;

import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * A synth shape's checkpoint folder in bf16 whose safetensors file is sparse: config.json (the shape's, with LAYERS
 * layers), the tiny example model's tokenizer, and model.safetensors with the real header (every tensor's name,
 * shape and offsets, as {@code synth} writes them) over a data section that is a hole: its apparent size is the
 * model's, its disk use a few KB. What reads only headers runs on it (the memory plans of {@code --dry-run}); what
 * reads weights would read zeros. For planning a model too big to write here (docs/benchmarks.md, the DeepSeek-V3
 * projection). A single-file program against a built driver classpath:
 *
 *   java -cp "$(cat driver/target/classpath.txt):driver/target/classes" deploy/bench/SparseCheckpoint.java \
 *       deepseek-v3 61 out/v3-sparse
 */
public class SparseCheckpoint {
    public static void main(String[] a) throws Exception {
        if (a.length != 3) {
            System.err.println("usage: SparseCheckpoint SHAPE LAYERS OUT");
            System.exit(2);
        }
        ModelShape shape = ModelShape.named(a[0]).orElseThrow(() -> new IllegalArgumentException(
                "unknown shape " + a[0] + " (known: " + ModelShape.names() + ")"));
        ObjectNode json = shape.config(Integer.parseInt(a[1]), DType.BF16);
        Path out = Files.createDirectories(Path.of(a[2]));
        ObjectMapper mapper = new ObjectMapper();
        Files.writeString(out.resolve("config.json"), mapper.writerWithDefaultPrettyPrinter().writeValueAsString(json));
        for (String name : new String[] {"tokenizer.json", "tokenizer_config.json"}) {
            Files.copy(Path.of("examples/models/mixtral-tiny").resolve(name), out.resolve(name));
        }
        ModelConfig config = ModelConfig.parse(json.toString(), a[0]);
        ObjectNode header = mapper.createObjectNode();
        long offset = 0;
        for (Map.Entry<String, long[]> e : ModelSchema.expectedStored(config).entrySet()) {
            long bytes = 2;
            for (long d : e.getValue()) {
                bytes *= d;
            }
            ObjectNode t = header.putObject(e.getKey());
            t.put("dtype", "BF16");
            ArrayNode dims = t.putArray("shape");
            for (long d : e.getValue()) {
                dims.add(d);
            }
            t.putArray("data_offsets").add(offset).add(offset + bytes);
            offset += bytes;
        }
        byte[] text = mapper.writeValueAsString(header).getBytes(StandardCharsets.UTF_8);
        int padded = (text.length + 7) / 8 * 8;
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(text);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        try (RandomAccessFile file = new RandomAccessFile(out.resolve("model.safetensors").toFile(), "rw")) {
            file.write(head.array());
            file.setLength(8L + padded + offset);                     // the data section: a hole
        }
        System.out.printf("%s: %s with %d layers, %,d parameters, %,d bytes of bf16 tensors (sparse)%n", out,
                shape.shapeName(), config.num_hidden_layers, ModelSchema.parameterCount(config), offset);
    }
}
