package org.sparkmoe.text;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.io.InputStream;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Expected ids in {@code tokenizer/tokenizer-cases.json} were produced by the real Hugging Face
 * tokenizer of the fixture checkpoint ({@code tokenizer/tokenizer.json}, copied from
 * mixtral-tiny): {@code AutoTokenizer.from_pretrained(dir)(text, add_special_tokens=False)
 * ["input_ids"]} for each text.
 */
class BpeTokenizerTest {

    private static BpeTokenizer tokenizer;

    record Case(int index, String text, int[] ids) {
        @Override
        public String toString() {
            String prefix = text.length() > 30 ? text.substring(0, 30) + "…" : text;
            return "case " + index + " " + new ObjectMapper().valueToTree(prefix);
        }
    }

    static Path resource(String name) {
        try {
            return Path.of(BpeTokenizerTest.class.getResource("/tokenizer/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static List<Case> cases() throws IOException {
        JsonNode root;
        try (InputStream in = BpeTokenizerTest.class.getResourceAsStream(
                "/tokenizer/tokenizer-cases.json")) {
            root = new ObjectMapper().readTree(in);
        }
        List<Case> cases = new ArrayList<>();
        for (JsonNode c : root) {
            int[] ids = new int[c.get("ids").size()];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = c.get("ids").get(i).asInt();
            }
            cases.add(new Case(cases.size(), c.get("text").asText(), ids));
        }
        return cases;
    }

    @BeforeAll
    static void load() {
        tokenizer = BpeTokenizer.load(resource("tokenizer.json"));
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    @Test
    void fixtureHasCases() throws IOException {
        assertEquals(5, cases().size());
    }

    @Test
    void vocabSizeIsFromTheFile() {
        assertEquals(1024, tokenizer.vocabSize());
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void encodeMatchesTransformers(Case c) {
        assertArrayEquals(c.ids(), tokenizer.encode(c.text()),
                () -> c + ": expected " + Arrays.toString(c.ids()) + " got "
                        + Arrays.toString(tokenizer.encode(c.text())));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void decodeInvertsEncode(Case c) {
        assertEquals(c.text(), tokenizer.decode(c.ids()));
        assertEquals(c.text(), tokenizer.decode(tokenizer.encode(c.text())));
    }

    /** Past DJL's default 512-token cap: ids of n joined copies = n copies of the ids + joins. */
    @Test
    void longInputIsNotTruncated() throws IOException {
        Case c = cases().get(0);
        int copies = 20;
        String text = String.join("\n", java.util.Collections.nCopies(copies, c.text()));
        int[] ids = tokenizer.encode(text);
        assertTrue(ids.length > 512, "ids: " + ids.length);
        assertTrue(ids.length >= copies * c.ids().length - copies,
                "expected about " + copies * c.ids().length + " ids, got " + ids.length);
        assertEquals(text, tokenizer.decode(ids));
    }

    /** ~1 MB in one call: whole, and equal to the concatenation of its pieces' encodings. */
    @Test
    void megabyteInputIsWhole() throws IOException {
        List<Case> cases = cases();
        StringBuilder sb = new StringBuilder();
        List<Integer> expected = new ArrayList<>();
        // Each piece ends in "\n" and the next begins with a letter: the pre-tokenizer never merges
        // across "\n" followed by a letter, so the whole encodes as the pieces do.
        int piece = 0;
        while (sb.length() < 1_000_000) {
            String p = "Piece " + piece + ": " + cases.get(piece % cases.size()).text() + "\n";
            sb.append(p);
            for (int id : tokenizer.encode(p)) {
                expected.add(id);
            }
            piece++;
        }
        String text = sb.toString();
        assertTrue(text.length() > BpeTokenizer.CHUNK_CHARS);
        int[] ids = tokenizer.encode(text);
        assertArrayEquals(tokenizer.encodeWhole(text), ids, "chunked vs one native call");
        assertArrayEquals(ids, tokenizer.encode(text, 3), "pieces on three threads");
        assertEquals(expected.size(), ids.length);
        assertArrayEquals(expected.stream().mapToInt(Integer::intValue).toArray(), ids);
        assertEquals(text, tokenizer.decode(ids));
    }

    /** Cutting long texts into pieces must never change the ids (BpeTokenizer.nextCut). */
    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void tinyPiecesGiveTheSameIds(Case c) {
        for (int chunk = 1; chunk < 40; chunk += 3) {
            assertArrayEquals(c.ids(), tokenizer.encode(c.text(), chunk, 1), c + " chunk " + chunk);
            assertArrayEquals(c.ids(), tokenizer.encode(c.text(), chunk, 3), c + " chunk " + chunk + ", 3 threads");
        }
    }

    @Test
    void tinyPiecesOnAwkwardNewlines() {
        // Newlines next to spaces, tabs, CR, NBSP, emoji, digits, punctuation and apostrophes:
        // only "graphic \n graphic" may be cut; everything else must stay whole.
        String[] atoms = {"a", "Z", "9", ".", "'s", "'", " ", "  ", "\t", "\n", "\n\n", "\r\n",
                "\u00a0", "😀", "é", "中", "--", " x", "\n "};
        java.util.Random random = new java.util.Random(20240611);
        for (int trial = 0; trial < 300; trial++) {
            StringBuilder sb = new StringBuilder();
            int len = 5 + random.nextInt(60);
            for (int i = 0; i < len; i++) {
                sb.append(atoms[random.nextInt(atoms.length)]);
            }
            String text = sb.toString();
            int[] whole = tokenizer.encodeWhole(text);
            for (int chunk = 1; chunk < 12; chunk++) {
                for (int threads : new int[] {1, 2}) {
                    int[] pieces = tokenizer.encode(text, chunk, threads);
                    assertArrayEquals(whole, pieces, () -> "trial text "
                            + new ObjectMapper().valueToTree(text) + " on " + threads + " threads");
                }
            }
        }
    }

    @Test
    void concurrentEncodesAgree() throws Exception {
        List<Case> cases = cases();
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<Boolean>> results = new ArrayList<>();
            for (int t = 0; t < 64; t++) {
                Case c = cases.get(t % cases.size());
                results.add(pool.submit(() -> Arrays.equals(c.ids(), tokenizer.encode(c.text()))
                        && c.text().equals(tokenizer.decode(c.ids()))));
            }
            for (Future<Boolean> r : results) {
                assertTrue(r.get());
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void noSpecialTokensAreAdded() {
        assertArrayEquals(new int[0], tokenizer.encode(""));
        int[] ids = tokenizer.encode("a");
        assertEquals(1, ids.length);
        assertTrue(ids[0] != 0, "id 0 is <|endoftext|>");
    }

    @Test
    void decodeRejectsOutOfRangeIds() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> tokenizer.decode(new int[] {5, 1024}));
        assertEquals("token id at position 1 must be in [0, 1024), got 1024", e.getMessage());
    }

    @Test
    void missingFileIsNamed(@TempDir Path dir) {
        Path missing = dir.resolve("nope.json");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> BpeTokenizer.load(missing));
        assertEquals("tokenizer file not found: " + missing, e.getMessage());
    }

    @Test
    void unparseableFileIsNamed(@TempDir Path dir) throws IOException {
        Path bad = dir.resolve("tokenizer.json");
        Files.writeString(bad, "{\"model\": 42", StandardCharsets.UTF_8);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> BpeTokenizer.load(bad));
        assertTrue(e.getMessage().startsWith("cannot parse tokenizer file " + bad + ": "),
                e.getMessage());
        assertTrue(!e.getMessage().contains("\n"), e.getMessage());
    }

    @Test
    void closedTokenizerRefuses() {
        BpeTokenizer t = BpeTokenizer.load(resource("tokenizer.json"));
        t.close();
        t.close(); // idempotent
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> t.encode("a"));
        assertTrue(e.getMessage().endsWith("is closed"), e.getMessage());
    }
}
