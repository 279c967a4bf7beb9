package org.sparkmoe.driver;

import org.sparkmoe.io.DType;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.model.CheckpointFolderWriter;
import org.sparkmoe.model.CheckpointOptions;
import picocli.CommandLine;
import picocli.CommandLine.Option;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** --max-shard-size and --dtype of the commands that write a checkpoint folder (surgery, merge, retrain-router). */
public final class CheckpointOutputOptions {
    @Option(names = "--max-shard-size", paramLabel = "SIZE", converter = SizeConverter.class,
            description = "Largest safetensors shard of the output, in bytes or with a unit (KB, MB, GB = 10^3, 10^6, "
                    + "10^9 as in transformers; KiB, MiB, GiB = 2^10, 2^20, 2^30). Bigger checkpoints are written as "
                    + "model-0000i-of-0000N.safetensors with model.safetensors.index.json. Default: 5GB.")
    long maxShardBytes = CheckpointFolderWriter.DEFAULT_SHARD_BYTES;

    @Option(names = "--dtype", paramLabel = "bf16|f16|f32", converter = DtypeConverter.class,
            description = "Dtype of every tensor of the output. Default: the input checkpoint's (a bf16 model stays "
                    + "bf16).")
    DType dtype;

    /** The options with {@code layout} (null: the input's). */
    public CheckpointOptions with(ExpertLayout layout) {
        return new CheckpointOptions(layout, maxShardBytes, dtype);
    }

    public static final class DtypeConverter implements CommandLine.ITypeConverter<DType> {
        @Override
        public DType convert(String value) {
            return switch (value) {
                case "bf16" -> DType.BF16;
                case "f16" -> DType.F16;
                case "f32" -> DType.F32;
                default -> throw new CommandLine.TypeConversionException(
                        "unknown dtype '" + value + "' (known: bf16, f16, f32)");
            };
        }
    }

    /** "5GB" = 5·10^9 bytes (transformers' max_shard_size), "2GiB" = 2·2^30, "1000" = 1000 bytes; at least 1. */
    public static final class SizeConverter implements CommandLine.ITypeConverter<Long> {
        private static final Pattern SIZE = Pattern.compile("(\\d+)\\s*(|B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)");

        @Override
        public Long convert(String value) {
            Matcher m = SIZE.matcher(value.trim());
            if (!m.matches()) {
                throw new CommandLine.TypeConversionException("expected a size such as 5GB, 500MB, 2GiB or a "
                        + "number of bytes, got '" + value + "'");
            }
            long unit = switch (m.group(2)) {
                case "", "B" -> 1L;
                case "KB" -> 1_000L;
                case "MB" -> 1_000_000L;
                case "GB" -> 1_000_000_000L;
                case "TB" -> 1_000_000_000_000L;
                case "KiB" -> 1L << 10;
                case "MiB" -> 1L << 20;
                case "GiB" -> 1L << 30;
                default -> 1L << 40;
            };
            try {
                long bytes = Math.multiplyExact(Long.parseLong(m.group(1)), unit);
                if (bytes < 1) {
                    throw new CommandLine.TypeConversionException("the shard size must be at least 1 byte, got '"
                            + value + "'");
                }
                return bytes;
            } catch (NumberFormatException | ArithmeticException e) {
                throw new CommandLine.TypeConversionException("size '" + value + "' is too large");
            }
        }
    }
}
