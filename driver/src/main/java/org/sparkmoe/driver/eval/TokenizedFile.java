package org.sparkmoe.driver.eval;

/** One input file's split, tokenized: file index (its position in --data) and token ids [N]. */
public final class TokenizedFile {
    final int file;
    final int[] tokens;

    TokenizedFile(int file, int[] tokens) {
        this.file = file;
        this.tokens = tokens;
    }
}
