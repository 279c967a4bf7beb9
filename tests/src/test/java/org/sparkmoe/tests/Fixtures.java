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

    /** The first 40,000 characters of sysadmin.txt written into {@code dir}: ~300 windows of 32 tokens in train. */
    static Path sysadminExcerpt(Path dir) throws java.io.IOException {
        Path data = dir.resolve("sysadmin-excerpt.txt");
        java.nio.file.Files.writeString(data,
                java.nio.file.Files.readString(corpus("sysadmin.txt")).substring(0, 40_000));
        return data;
    }

    /**
     * transformers (fp32, eager attention) outputs of the tiny model on 12 sequences of 64 tokens: input_ids,
     * logits, hidden_states.0..4, router_logits.0..3 (see docs/data.md for the recipe).
     */
    static Path reference() {
        return root().resolve("tests/src/test/resources/reference/mixtral-tiny-reference.safetensors");
    }

    /**
     * The 3-layer qwen2_moe with random weights (layer 1 dense, shared experts, q/k/v biases) written by
     * {@code tests/src/test/resources/reference/make_qwen2_moe_reference.py}.
     */
    static Path qwenTiny() {
        return root().resolve("tests/src/test/resources/reference/qwen2-moe-tiny");
    }

    /** NumPy outputs of {@link #qwenTiny()} (see that script): input_ids, logits, hidden_states.0..3, router_logits.0..1. */
    static Path qwenTinyReference() {
        return root().resolve("tests/src/test/resources/reference/qwen2-moe-tiny-reference.safetensors");
    }

    /** Logits of {@link #qwenTiny()}'s weights with norm_topk_prob true, from the same script. */
    static Path qwenTinyNormTopKReference() {
        return root().resolve("tests/src/test/resources/reference/qwen2-moe-tiny-normtopk-reference.safetensors");
    }
}
