package org.sparkmoe.calib;

import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.GgufWriter;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.LinearInputs.Site;

import java.io.BufferedOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The importance matrix llama.cpp's {@code llama-imatrix} writes and {@code llama-quantize --imatrix} reads, from
 * {@link ImportanceSums}; one entry per llama.cpp weight name ({@link LlamaCppNames}), in name order (as llama.cpp
 * sorts them), weights that read the same input sharing its sums.
 * <ul>
 * <li>GGUF (its current format): {@code general.type = "imatrix"}, {@code imatrix.datasets} (string array),
 * {@code imatrix.chunk_count} and {@code imatrix.chunk_size} (u32); per weight {@code <name>.in_sum2} F32 ne [n, M]
 * (Σ x² per input column, per matrix) and {@code <name>.counts} F32 ne [1, M] (rows per matrix), M = experts for a
 * stacked expert weight, else 1. llama.cpp's optional {@code <name>.in_sum} (Σ x, for its statistics only) is not
 * written; quantize does not read it.</li>
 * <li>dat (legacy): i32 entry count; per weight with data: i32 name length, name, i32 ncall = ⌈max count /
 * chunk size⌉, i32 n·M, f32[n·M] (Σx²/count)·ncall (a matrix without rows: 1·ncall); then i32 chunk count, i32
 * length and the last dataset's name. Little endian, as llama.cpp writes it on x86 and ARM.</li>
 * </ul>
 */
public final class ImatrixFile {
    /** One weight's entry. */
    public record Entry(String name, SquareSums sums) {
    }

    private ImatrixFile() {
    }

    /** Every weight's entry of the model's decoder layers, in name order. */
    public static List<Entry> entries(ModelConfig config, ImportanceSums sums) {
        List<Entry> entries = new ArrayList<>();
        for (int layer = 0; layer < sums.layers(); layer++) {
            for (Site site : Site.values()) {
                SquareSums s = sums.site(layer, site);
                if (s != null) {
                    LlamaCppNames.of(config, layer, site).forEach(name -> entries.add(new Entry(name, s)));
                }
            }
            if (sums.expertInputs(layer) != null) {
                for (String name : LlamaCppNames.expertInputs(layer)) {
                    entries.add(new Entry(name, sums.expertInputs(layer)));
                }
                entries.add(new Entry(LlamaCppNames.expertIntermediates(layer), sums.expertIntermediates(layer)));
            }
        }
        entries.sort(Comparator.comparing(Entry::name));
        return entries;
    }

    /**
     * Writes the GGUF imatrix to {@code target} atomically.
     *
     * @param datasets   the calibration text files
     * @param chunkCount windows forwarded (llama.cpp's chunks)
     * @param chunkSize  tokens per window
     */
    public static void writeGguf(FileSystem fs, Path target, List<Entry> entries, List<String> datasets,
                                 int chunkCount, int chunkSize) {
        GgufWriter gguf = new GgufWriter()
                .putString("general.type", "imatrix")
                .putStringArray("imatrix.datasets", datasets)
                .putUint32("imatrix.chunk_count", chunkCount)
                .putUint32("imatrix.chunk_size", chunkSize);
        for (Entry e : entries) {
            SquareSums s = e.sums();
            gguf.add(new GgufWriter.F32Tensor(e.name() + ".in_sum2", new long[] {s.width(), s.matrices()},
                    () -> floats(s.sums())));
            gguf.add(new GgufWriter.F32Tensor(e.name() + ".counts", new long[] {1, s.matrices()}, () -> {
                long[] counts = s.counts();
                float[] out = new float[counts.length];
                for (int m = 0; m < counts.length; m++) {
                    out[m] = counts[m];
                }
                return out;
            }));
        }
        gguf.write(fs, target);
    }

    /** Writes the legacy binary imatrix to {@code target} atomically (arguments as {@link #writeGguf}). */
    public static void writeDat(FileSystem fs, Path target, List<Entry> entries, List<String> datasets,
                                int chunkCount, int chunkSize) {
        AtomicFile.write(fs, target, out -> writeDat(out, entries, datasets, chunkCount, chunkSize));
    }

    private static void writeDat(OutputStream sink, List<Entry> entries, List<String> datasets, int chunkCount,
                                 int chunkSize) throws IOException {
        List<Entry> withData = entries.stream()
                .filter(e -> java.util.Arrays.stream(e.sums().counts()).anyMatch(c -> c > 0)).toList();
        LittleEndian out = new LittleEndian(new BufferedOutputStream(sink, 1 << 16));
        out.i32(withData.size());
        for (Entry e : withData) {
            byte[] name = e.name().getBytes(StandardCharsets.UTF_8);
            out.i32(name.length);
            out.bytes(name);
            long[] counts = e.sums().counts();
            long max = java.util.Arrays.stream(counts).max().orElseThrow();
            int ncall = Math.toIntExact((max + chunkSize - 1) / chunkSize);
            double[] sums = e.sums().sums();
            int width = e.sums().width();
            out.i32(ncall);
            out.i32(sums.length);
            for (int i = 0; i < sums.length; i++) {
                float count = counts[i / width];
                float value = (float) sums[i];
                if (count == 0f) {
                    value = 1f;
                    count = 1f;
                }
                out.f32((value / count) * (float) ncall);
            }
        }
        out.i32(chunkCount);
        byte[] dataset = (datasets.isEmpty() ? "" : datasets.get(datasets.size() - 1)).getBytes(StandardCharsets.UTF_8);
        out.i32(dataset.length);
        out.bytes(dataset);
        out.flush();
    }

    private static float[] floats(double[] values) {
        float[] out = new float[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = (float) values[i];
        }
        return out;
    }

    /** Little-endian i32 / f32 (DataOutputStream is big endian). */
    private static final class LittleEndian {
        private final DataOutputStream out;

        LittleEndian(OutputStream out) {
            this.out = new DataOutputStream(out);
        }

        void i32(int v) throws IOException {
            out.writeInt(Integer.reverseBytes(v));
        }

        void f32(float v) throws IOException {
            i32(Float.floatToRawIntBits(v));
        }

        void bytes(byte[] b) throws IOException {
            out.write(b);
        }

        void flush() throws IOException {
            out.flush();
        }
    }
}
