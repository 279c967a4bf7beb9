package org.sparkmoe.text;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class TextSplitTest {

    @Test
    void boundariesAreCodePointIndices() {
        // 40 code points, 60 chars: every even code point is an emoji (a surrogate pair).
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 40; i++) {
            sb.appendCodePoint(i % 2 == 0 ? 0x1F600 + i : '中' + i);
        }
        String text = sb.toString();
        assertEquals(60, text.length());
        // n = 40: trainEnd = floor(36.0) = 36, validEnd = floor(38.0) = 38.
        assertEquals(text.substring(0, text.offsetByCodePoints(0, 36)), TextSplit.TRAIN.apply(text));
        assertEquals(36, cp(TextSplit.TRAIN.apply(text)));
        assertEquals(2, cp(TextSplit.VALID.apply(text)));
        assertEquals(2, cp(TextSplit.TEST.apply(text)));
        assertEquals(text.codePointAt(text.offsetByCodePoints(0, 36)),
                TextSplit.VALID.apply(text).codePointAt(0));
        assertEquals(text.codePointAt(text.offsetByCodePoints(0, 38)),
                TextSplit.TEST.apply(text).codePointAt(0));
        assertEquals(text, TextSplit.ALL.apply(text));
        assertConcatenates(text);
    }

    @Test
    void boundariesRoundDown() {
        // n = 47 (mixed 1-, 2-, 3- and 4-byte code points): trainEnd = floor(42.3) = 42,
        // validEnd = floor(44.65) = 44.
        String unit = "aé中😀";
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 47; i++) {
            sb.append(new String(Character.toChars(unit.codePointAt(unit.offsetByCodePoints(0, i % 4)))));
        }
        String text = sb.toString();
        assertEquals(47, cp(text));
        assertEquals(42, cp(TextSplit.TRAIN.apply(text)));
        assertEquals(2, cp(TextSplit.VALID.apply(text)));
        assertEquals(3, cp(TextSplit.TEST.apply(text)));
        assertEquals(42, TextSplit.VALID.startCodePoint(47));
        assertEquals(44, TextSplit.TEST.startCodePoint(47));
        assertConcatenates(text);
    }

    @Test
    void tinyTexts() {
        for (String text : new String[] {"", "😀", "ab", "a😀c"}) {
            assertConcatenates(text);
        }
        assertEquals("", TextSplit.TRAIN.apply("😀")); // floor(0.9) = 0
        assertEquals("😀", TextSplit.TEST.apply("😀"));
    }

    @Test
    void parse() {
        assertEquals(TextSplit.TRAIN, TextSplit.parse("train"));
        assertEquals(TextSplit.VALID, TextSplit.parse("VALID"));
        assertEquals(TextSplit.TEST, TextSplit.parse("test"));
        assertEquals(TextSplit.ALL, TextSplit.parse("all"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TextSplit.parse("validation"));
        assertEquals("unknown split 'validation'; expected one of train, valid, test, all",
                e.getMessage());
    }

    private static void assertConcatenates(String text) {
        assertEquals(text, TextSplit.TRAIN.apply(text) + TextSplit.VALID.apply(text)
                + TextSplit.TEST.apply(text));
    }

    private static int cp(String s) {
        return s.codePointCount(0, s.length());
    }
}
