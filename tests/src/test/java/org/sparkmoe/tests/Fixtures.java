package org.sparkmoe.tests;

import java.nio.file.Files;
import java.nio.file.Path;

/** Paths of the fixtures checked into the repository (the bundled tiny model, corpus and reference outputs). */
final class Fixtures {
    private Fixtures() {
    }

    static Path root() {
        String root = System.getProperty("sparkmoe.root");
        Path p = root != null ? Path.of(root) : Path.of("..");
        if (!Files.isDirectory(p.resolve("examples"))) {
            throw new IllegalStateException("cannot find the repository root (examples/) from " + p.toAbsolutePath());
        }
        return p.toAbsolutePath().normalize();
    }

    /** The 4-layer, 8-expert Mixtral trained by transformers 5.17 (copied from shared/fixtures). */
    static Path tinyModel() {
        return root().resolve("examples/models/mixtral-tiny");
    }

    static Path corpus(String file) {
        return root().resolve("examples/corpus").resolve(file);
    }

    /**
     * transformers (fp32, eager attention) outputs of the tiny model on 12 sequences of 64 tokens: input_ids,
     * logits, hidden_states.0..4, router_logits.0..3 (see shared/docs/DATA.md for the recipe).
     */
    static Path reference() {
        return root().resolve("tests/src/test/resources/reference/mixtral-tiny-reference.safetensors");
    }
}
