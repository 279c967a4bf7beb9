package org.sparkmoe.driver.data;

/** One input file's split, tokenized: file index (its position in --data) and token ids [N]. */
public final class TokenizedFile {
    public final int file;
    public final int[] tokens;

    TokenizedFile(int file, int[] tokens) {
        this.file = file;
        this.tokens = tokens;
    }
}
