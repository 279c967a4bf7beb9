package org.sparkmoe.text;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import ai.djl.huggingface.tokenizers.jni.TokenizersLibrary;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.locks.ReadWriteLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * A Hugging Face {@code tokenizer.json} (byte-level BPE for our checkpoints) run by the Rust
 * {@code tokenizers} library through DJL's JNI binding.
 *
 * <p>Encoding adds no special tokens and never truncates or pads: {@code encode(text)} is exactly
 * what transformers' {@code tokenizer(text, add_special_tokens=False)["input_ids"]} gives, for any
 * length (DJL's own default would truncate at 512 tokens and add special tokens).
 *
 * <p>Thread-safe: several Spark task threads in one JVM may call {@link #encode} and
 * {@link #decode} on one instance concurrently (the Rust tokenizer is immutable after loading;
 * each call owns its native encoding). {@link #close} waits for calls in flight and makes later
 * calls fail with {@link IllegalStateException}.
 *
 * <p>Native library: DJL copies {@code libtokenizers.so} out of its jar on first use into
 * {@code $DJL_CACHE_DIR/tokenizers/<version>-cpu-linux-x86_64/} (default {@code ~/.djl.ai});
 * set {@code DJL_CACHE_DIR} on executors whose home is not writable, or {@code RUST_LIBRARY_PATH}
 * to a prebuilt copy.
 */
public final class BpeTokenizer implements AutoCloseable {

    /** Options for DJL: no special tokens, no truncation, no padding. */
    private static final Map<String, String> OPTIONS = Map.of(
            "addSpecialTokens", "false",
            "truncation", "false",
            "padding", "false");

    /** Target piece length for long texts, in chars. */
    static final int CHUNK_CHARS = 1 << 18;
    /** The shortest piece {@link #encode(String, int)} gives a thread of its own. */
    static final int MIN_THREAD_CHARS = 1 << 14;

    private final HuggingFaceTokenizer tokenizer;
    private final long handle;   // the native tokenizer, owned by `tokenizer`
    private final int vocabSize; // V
    private final String source;
    /** Whether {@link #nextCut} points are pre-token boundaries for this tokenizer. */
    private final boolean chunkable;
    /** Read lock per call, write lock to close: no call may use a freed native handle. */
    private final ReadWriteLock lifecycle = new ReentrantReadWriteLock();
    private boolean closed;

    private BpeTokenizer(HuggingFaceTokenizer tokenizer, int vocabSize, boolean chunkable,
            String source) {
        this.tokenizer = tokenizer;
        this.chunkable = chunkable;
        this.handle = tokenizer.getHandle();
        this.vocabSize = vocabSize;
        this.source = source;
    }

    /**
     * Loads a Hugging Face {@code tokenizer.json} from the local file system.
     *
     * @throws IllegalArgumentException naming the file if it is missing, unreadable or not a
     *     tokenizer the library can parse
     */
    public static BpeTokenizer load(Path tokenizerJson) {
        String json;
        try (InputStream in = Files.newInputStream(tokenizerJson)) {
            json = new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("tokenizer file not found: " + tokenizerJson);
        } catch (IOException e) {
            throw new IllegalArgumentException(
                    "cannot read tokenizer file " + tokenizerJson + ": " + e.getMessage(), e);
        }
        return fromJson(json, tokenizerJson.toString());
    }

    /**
     * Builds a tokenizer from the text of a {@code tokenizer.json}; {@code source} names it in
     * error messages (for example the Hadoop path it was read from).
     */
    public static BpeTokenizer fromJson(String json, String source) {
        // DJL's newInstance calls Ec2Utils.callHome: it queries the EC2 metadata endpoint and
        // sends telemetry (once a day per JVM) unless OPT_OUT_TRACKING (or DJL_OFFLINE) is set.
        // Executors must make no network calls. Respect a value the user set explicitly.
        if (System.getenv("OPT_OUT_TRACKING") == null
                && System.getProperty("OPT_OUT_TRACKING") == null) {
            System.setProperty("OPT_OUT_TRACKING", "true");
        }
        // The JSON first: a truncated file, another model type (WordPiece, Unigram) or an empty vocabulary
        // is named here in one line, before the native library sees it.
        JsonNode root = parseJson(json, source);
        String type = root.path("model").path("type").asText("");
        if (!"BPE".equals(type)) {
            throw new IllegalArgumentException("tokenizer file " + source + ": expected a BPE tokenizer (model.type "
                    + "\"BPE\"), found model.type " + (type.isEmpty() ? "missing" : "\"" + type + "\""));
        }
        int v = vocabSizeOf(root, source);
        HuggingFaceTokenizer tok;
        try {
            tok = HuggingFaceTokenizer.newInstance(
                    new ByteArrayInputStream(json.getBytes(StandardCharsets.UTF_8)), OPTIONS);
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException("cannot parse tokenizer file " + source + ": "
                    + firstLine(e.getMessage()), e);
        }
        boolean chunkable;
        try {
            chunkable = isPlainByteLevel(root);
            // The options above already do this; say it to the native tokenizer directly as well,
            // since encode() goes straight to it and a silent 512 cap would corrupt every window.
            TokenizersLibrary.LIB.disableTruncation(tok.getHandle());
            TokenizersLibrary.LIB.disablePadding(tok.getHandle());
        } catch (RuntimeException e) {
            tok.close();
            throw e;
        }
        return new BpeTokenizer(tok, v, chunkable, source);
    }

    /**
     * Token ids of {@code text}: no special tokens, no truncation, no padding, any length.
     *
     * <p>Long texts are encoded in pieces of about {@link #CHUNK_CHARS} chars, cut only at
     * points where the byte-level pre-tokenizer always splits (see {@link #nextCut}), so the ids
     * are identical to one call on the whole text; this bounds native memory (one call on the
     * 4.6 MB manuals.txt took ~0.8 GB of native memory for DJL's per-token strings and offsets).
     */
    public int[] encode(String text) {
        return encode(text, CHUNK_CHARS, 1);
    }

    /**
     * {@link #encode(String)} on up to {@code threads} threads at once, the same ids: the text cut at {@link #nextCut}
     * points into pieces of about equal length, encoded in parallel. A piece is at most {@link #CHUNK_CHARS} /
     * threads chars (but at least {@link #MIN_THREAD_CHARS}), so the pieces in flight hold no more native memory
     * together than one piece of {@link #encode(String)}. For a driver tokenizing a small input itself; a Spark
     * task, which shares its executor's cores with other tasks, takes {@link #encode(String)}.
     */
    public int[] encode(String text, int threads) {
        int t = Math.max(1, threads);
        long perThread = Math.min(CHUNK_CHARS / t, (text.length() + (long) t - 1) / t);
        return encode(text, (int) Math.max(MIN_THREAD_CHARS, perThread), t);
    }

    /**
     * {@link #encode(String)} in pieces of about {@code chunkChars} (tests use tiny ones), on up to {@code threads}
     * threads.
     */
    int[] encode(String text, int chunkChars, int threads) {
        if (!chunkable || text.length() <= chunkChars) {
            return encodeWhole(text);
        }
        List<Integer> ends = new ArrayList<>();                  // piece p is [ends[p − 1], ends[p]), ends[−1] = 0
        for (int start = 0; start < text.length(); start = ends.get(ends.size() - 1)) {
            ends.add(nextCut(text, start + chunkChars));
        }
        int[][] pieces = new int[ends.size()][];
        if (threads > 1) {
            encodeInParallel(text, ends, threads, pieces);
        } else {
            for (int p = 0; p < pieces.length; p++) {
                pieces[p] = encodeWhole(text.substring(p == 0 ? 0 : ends.get(p - 1), ends.get(p)));
            }
        }
        int[] out = new int[Arrays.stream(pieces).mapToInt(piece -> piece.length).sum()];
        int n = 0;
        for (int[] piece : pieces) {
            System.arraycopy(piece, 0, out, n, piece.length);
            n += piece.length;
        }
        return out;
    }

    /** pieces[p] = the ids of piece p of {@code text} (see {@link #encode(String, int, int)}), on up to threads. */
    private void encodeInParallel(String text, List<Integer> ends, int threads, int[][] pieces) {
        ExecutorService pool = Executors.newFixedThreadPool(Math.min(threads, ends.size()), task -> {
            Thread thread = new Thread(task, "sparkmoe-tokenize");
            thread.setDaemon(true);
            return thread;
        });
        try {
            List<Future<int[]>> encoded = new ArrayList<>();
            for (int p = 0; p < pieces.length; p++) {
                int from = p == 0 ? 0 : ends.get(p - 1);
                int to = ends.get(p);
                encoded.add(pool.submit(() -> encodeWhole(text.substring(from, to))));
            }
            for (int p = 0; p < pieces.length; p++) {
                pieces[p] = encoded.get(p).get();
            }
        } catch (ExecutionException e) {
            throw e.getCause() instanceof RuntimeException r ? r : new IllegalStateException(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while tokenizing", e);
        } finally {
            pool.shutdownNow();
        }
    }

    /** One native call on the whole text (package-private: tests compare it with chunking). */
    int[] encodeWhole(String text) {
        lifecycle.readLock().lock();
        try {
            checkOpen();
            // Straight to the JNI calls for ids only: HuggingFaceTokenizer.encode would also copy
            // out token strings, char spans, masks and word ids (several objects per token).
            long encoding = TokenizersLibrary.LIB.encode(handle, text, false);
            long[] ids;
            try {
                ids = TokenizersLibrary.LIB.getTokenIds(encoding);
            } finally {
                TokenizersLibrary.LIB.deleteEncoding(encoding);
            }
            int[] out = new int[ids.length];
            for (int i = 0; i < ids.length; i++) {
                out[i] = Math.toIntExact(ids[i]);
            }
            return out;
        } finally {
            lifecycle.readLock().unlock();
        }
    }

    /**
     * The first index {@code i >= from} where {@code text[i-2], text[i-1], text[i]} is
     * (ASCII graphic, '\n', ASCII graphic), or {@code text.length()} if there is none.
     *
     * <p>Why the ids cannot change when cutting there: the GPT-2 pre-tokenizer regex
     * {@code 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+}
     * has no look-behind; a lone '\n' between two non-space chars is its own pre-token both in
     * the whole text ({@code \s+}) and at the end of the left piece ({@code \s+(?!\S)}); the
     * char before it ends its own pre-token; the char after it cannot take the '\n' (only a
     * literal ' ' may lead a pre-token); BPE never merges across pre-tokens. ASCII graphic
     * (0x21..0x7E) keeps clear of every Unicode space the regex's {@code \s} might match.
     */
    static int nextCut(String text, int from) {
        for (int i = Math.max(from, 2); i < text.length(); i++) {
            if (text.charAt(i - 1) == '\n' && asciiGraphic(text.charAt(i))
                    && asciiGraphic(text.charAt(i - 2))) {
                return i;
            }
        }
        return text.length();
    }

    private static boolean asciiGraphic(char c) {
        return c > 0x20 && c < 0x7F;
    }

    /** The text of {@code ids} (special tokens kept, nothing stripped). */
    public String decode(int[] ids) {
        long[] longIds = new long[ids.length];
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= vocabSize) {
                throw new IllegalArgumentException("token id at position " + i
                        + " must be in [0, " + vocabSize + "), got " + ids[i]);
            }
            longIds[i] = ids[i];
        }
        lifecycle.readLock().lock();
        try {
            checkOpen();
            return TokenizersLibrary.LIB.decode(handle, longIds, false);
        } finally {
            lifecycle.readLock().unlock();
        }
    }

    /** V: the number of ids, model vocabulary plus added tokens (max id + 1). */
    public int vocabSize() {
        return vocabSize;
    }

    @Override
    public void close() {
        lifecycle.writeLock().lock();
        try {
            if (!closed) {
                closed = true;
                tokenizer.close();
            }
        } finally {
            lifecycle.writeLock().unlock();
        }
    }

    @Override
    public String toString() {
        return "BpeTokenizer[" + source + ", V=" + vocabSize + "]";
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("tokenizer " + source + " is closed");
        }
    }

    /** max id + 1 over {@code model.vocab} and {@code added_tokens}, as transformers' len(tok). */
    private static int vocabSizeOf(JsonNode root, String source) {
        JsonNode vocab = root.path("model").path("vocab");
        if (!vocab.isObject() || vocab.isEmpty()) {
            throw new IllegalArgumentException("tokenizer file " + source
                    + " has no model.vocab object; expected a BPE tokenizer.json");
        }
        int max = -1;
        for (JsonNode id : vocab) {
            max = Math.max(max, id.asInt());
        }
        for (JsonNode added : root.path("added_tokens")) {
            max = Math.max(max, added.path("id").asInt());
        }
        return max + 1;
    }

    private static JsonNode parseJson(String json, String source) {
        try {
            return new ObjectMapper().readTree(json);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot parse tokenizer file " + source + ": "
                    + firstLine(e.getMessage()), e);
        }
    }

    /**
     * True when the text passes through nothing but the GPT-2 byte-level pre-tokenizer before
     * BPE (no normalizer, ByteLevel with its regex and without an added prefix space): the
     * condition under which {@link #nextCut} is exact. Anything else is encoded in one call.
     */
    static boolean isPlainByteLevel(JsonNode root) {
        JsonNode pre = root.path("pre_tokenizer");
        return root.path("normalizer").isNull()
                && "ByteLevel".equals(pre.path("type").asText())
                && !pre.path("add_prefix_space").asBoolean(true)
                && pre.path("use_regex").asBoolean(false)
                && "BPE".equals(root.path("model").path("type").asText());
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "(no message)";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }
}
