package org.sparkmoe.driver.data;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.driver.SparkContexts;
import org.sparkmoe.text.TextSplit;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Tokenizing started before Spark ({@link TokenizeStage#startEarly}) gives what {@link TokenizeStage#run} gives. */
class TokenizeStageTest {
    private static final String TINY = Path.of("..", "examples", "models", "mixtral-tiny").toAbsolutePath().toUri()
            .toString();
    private static final List<String> DATA = List.of(
            Path.of("..", "examples", "corpus", "fortunes.txt").toAbsolutePath().toUri().toString(),
            Path.of("..", "examples", "corpus", "sysadmin.txt").toAbsolutePath().toUri().toString());

    private static JavaSparkContext sc;

    @BeforeAll
    static void start() {
        sc = SparkContexts.start("tokenize-test", "local[2]");
    }

    @AfterAll
    static void stop() {
        sc.stop();
    }

    @Test
    void earlyTokensAreTheTokensOfRun() {
        List<TokenizedFile> own = TokenizeStage.run(sc, "test", TINY, DATA, TextSplit.VALID, 64).onDriver();
        TokenizeStage.startEarly(TINY, DATA, TextSplit.VALID, new Configuration());
        assertEquals(1, TokenizeStage.earlyPending());
        List<TokenizedFile> early = TokenizeStage.run(sc, "test", TINY, DATA, TextSplit.VALID, 64).onDriver();
        assertEquals(0, TokenizeStage.earlyPending(), "run took the early tokens");
        assertNotNull(own);
        assertEquals(own.size(), early.size());
        for (int f = 0; f < own.size(); f++) {
            assertEquals(f, early.get(f).file);
            assertArrayEquals(own.get(f).tokens, early.get(f).tokens, DATA.get(f));
        }
    }

    @Test
    void anEarlyFailureIsThrownByRunAsItsOwn(@TempDir Path noTokenizer) throws IOException {
        Files.writeString(noTokenizer.resolve("config.json"), "{}");
        String model = noTokenizer.toUri().toString();
        RuntimeException own = assertThrows(RuntimeException.class,
                () -> TokenizeStage.run(sc, "test", model, DATA, TextSplit.TEST, 64));
        TokenizeStage.startEarly(model, DATA, TextSplit.TEST, new Configuration());
        assertEquals(1, TokenizeStage.earlyPending());
        RuntimeException early = assertThrows(RuntimeException.class,
                () -> TokenizeStage.run(sc, "test", model, DATA, TextSplit.TEST, 64));
        assertEquals(0, TokenizeStage.earlyPending(), "run took the early failure");
        assertEquals(own.getClass(), early.getClass());
        assertEquals(own.getMessage(), early.getMessage());
    }
}
