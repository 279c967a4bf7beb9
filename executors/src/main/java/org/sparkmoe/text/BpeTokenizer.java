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
import java.util.Map;
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
 */
public final class BpeTokenizer implements AutoCloseable {

    /** Options for DJL: no special tokens, no truncation, no padding. */
    private static final Map<String, String> OPTIONS = Map.of(
            "addSpecialTokens", "false",
            "truncation", "false",
            "padding", "false");

    private final HuggingFaceTokenizer tokenizer;
    private final long handle;   // the native tokenizer, owned by `tokenizer`
    private final int vocabSize; // V
    private final String source;
    /** Read lock per call, write lock to close: no call may use a freed native handle. */
    private final ReadWriteLock lifecycle = new ReentrantReadWriteLock();
    private boolean closed;

    private BpeTokenizer(HuggingFaceTokenizer tokenizer, int vocabSize, String source) {
        this.tokenizer = tokenizer;
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
        // DJL calls an AWS metadata endpoint ("telemetry") on every tokenizer creation unless
        // this is set; executors must not make network calls, and on a machine with no route the
        // call can stall. Respect a value the user set explicitly.
        if (System.getenv("OPT_OUT_TRACKING") == null
                && System.getProperty("OPT_OUT_TRACKING") == null) {
            System.setProperty("OPT_OUT_TRACKING", "true");
        }
        HuggingFaceTokenizer tok;
        try {
            tok = HuggingFaceTokenizer.newInstance(
                    new ByteArrayInputStream(
                            json.getBytes(StandardCharsets.UTF_8)),
                    OPTIONS);
        } catch (IOException | RuntimeException e) {
            throw new IllegalArgumentException("cannot parse tokenizer file " + source + ": "
                    + firstLine(e.getMessage()), e);
        }
        int v;
        try {
            v = vocabSizeOf(json, source);
            // The options above already do this; say it to the native tokenizer directly as well,
            // since encode() goes straight to it and a silent 512 cap would corrupt every window.
            TokenizersLibrary.LIB.disableTruncation(tok.getHandle());
            TokenizersLibrary.LIB.disablePadding(tok.getHandle());
        } catch (RuntimeException e) {
            tok.close();
            throw e;
        }
        return new BpeTokenizer(tok, v, source);
    }

    /** Token ids of {@code text}: no special tokens, no truncation, no padding. */
    public int[] encode(String text) {
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
    private static int vocabSizeOf(String json, String source) {
        JsonNode root;
        try {
            root = new ObjectMapper().readTree(json);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot parse tokenizer file " + source + ": "
                    + firstLine(e.getMessage()), e);
        }
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

    private static String firstLine(String s) {
        if (s == null) {
            return "(no message)";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }
}
