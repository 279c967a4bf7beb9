package org.sparkmoe.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.sparkmoe.io.DType;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Arrays;
import java.util.Optional;
import java.util.stream.Collectors;

/**
 * Real models whose shapes {@code sparkmoe synth} can reproduce: each holds the model's config.json exactly as
 * published on the Hugging Face Hub (resources {@code org/sparkmoe/model/shapes/NAME.json}), its Hub id and its
 * published parameter count. GLM-4.5-Air's config.json was written offline (the Hub could not be reached) from its
 * published values, each shape field checked against transformers 5.17's {@code Glm4MoeConfig} defaults, which are
 * GLM-4.5-Air's; its published 106B counts the 46 decoder layers, not the multi-token-prediction layer
 * ({@code num_nextn_predict_layers}), which SparkMoE does not read.
 * The gpt-oss configs were written from the published ones as remembered (24 / 36 layers,
 * hidden 2880, 32 / 128 experts top-4 of width 2880, 64 heads of 64, 8 KV heads, vocab 201088, window 128 on
 * alternate layers from the first, YaRN factor 32 over 4096): the Hub could not be reached offline to copy them.
 * DeepSeek-V2-Lite's, DeepSeek-V3's and Kimi-K2's configs were written from their
 * published fields without fetching them (this repository is built offline); their parameter counts agree with the
 * model cards within 1% (V3 and K2 without the multi-token-prediction layer).
 * Qwen3-30B-A3B's config.json is the published one as a public copy of the Hub's file gives it (48 layers, 128
 * experts top-8 of width 768, hidden 2048, 32 query and 4 KV heads of 128, per-head q/k norms, vocab 151936).
 * OLMoE-1B-7B-0924's was written from its published fields (16 layers, 64 experts top-8 of width 1024, hidden 2048,
 * 16 heads, whole-projection q/k norms, vocab 50304), each checked against transformers 5.17's {@code OlmoeConfig}
 * defaults, which are that model's except {@code intermediate_size} (2048 there, 1024 in the release: the published
 * 6.92B parameters hold only with 1024).
 */
public enum ModelShape {
    MIXTRAL_8X7B("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1", 46.7e9),
    QWEN1_5_MOE_A2_7B("qwen1.5-moe-a2.7b", "Qwen/Qwen1.5-MoE-A2.7B", 14.3e9),
    GLM_4_5_AIR("glm-4.5-air", "zai-org/GLM-4.5-Air", 106e9),
    MISTRAL_7B("mistral-7b", "mistralai/Mistral-7B-v0.1", 7.24e9),
    GPT_OSS_20B("gpt-oss-20b", "openai/gpt-oss-20b", 20.9e9),
    GPT_OSS_120B("gpt-oss-120b", "openai/gpt-oss-120b", 116.8e9),
    DEEPSEEK_V2_LITE("deepseek-v2-lite", "deepseek-ai/DeepSeek-V2-Lite", 15.7e9),
    DEEPSEEK_V3("deepseek-v3", "deepseek-ai/DeepSeek-V3", 671e9),
    KIMI_K2("kimi-k2", "moonshotai/Kimi-K2-Instruct", 1.03e12),
    QWEN3_30B_A3B("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", 30.5e9),
    OLMOE_1B_7B("olmoe-1b-7b", "allenai/OLMoE-1B-7B-0924", 6.92e9);

    private static final ObjectMapper JSON = new ObjectMapper();

    private final String shapeName;
    private final String huggingFaceId;
    private final double publishedParameters;

    ModelShape(String shapeName, String huggingFaceId, double publishedParameters) {
        this.shapeName = shapeName;
        this.huggingFaceId = huggingFaceId;
        this.publishedParameters = publishedParameters;
    }

    /** The name on the command line, e.g. {@code mixtral-8x7b}. */
    public String shapeName() {
        return shapeName;
    }

    public String huggingFaceId() {
        return huggingFaceId;
    }

    /** The total parameter count the model card gives (rounded, e.g. 46.7e9). */
    public double publishedParameters() {
        return publishedParameters;
    }

    public static Optional<ModelShape> named(String name) {
        return Arrays.stream(values()).filter(s -> s.shapeName.equals(name)).findFirst();
    }

    /** "mixtral-8x7b, qwen1.5-moe-a2.7b, glm-4.5-air, mistral-7b, gpt-oss-20b, gpt-oss-120b", for errors and help. */
    public static String names() {
        return Arrays.stream(values()).map(ModelShape::shapeName).collect(Collectors.joining(", "));
    }

    /** A fresh copy of the published config.json. */
    public ObjectNode config() {
        String resource = "shapes/" + shapeName + ".json";
        try (InputStream in = ModelShape.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException("missing resource " + resource + " next to " + ModelShape.class);
            }
            return (ObjectNode) JSON.readTree(in);
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + resource, e);
        }
    }

    /** The torch dtype the model is published in ({@code torch_dtype}, e.g. bfloat16 → BF16). */
    public DType publishedDtype() {
        return dtypeOf(config().path("torch_dtype").asText());
    }

    /** The config's {@code initializer_range}, the std of the random weights (0.02 when absent). */
    public double initializerRange() {
        return config().path("initializer_range").asDouble(0.02);
    }

    /**
     * The published config with {@code num_hidden_layers = layers} and every field that counts layers kept
     * consistent (Qwen2-MoE's {@code mlp_only_layers} keeps only indices below {@code layers},
     * {@code max_window_layers} is capped at it; GLM's {@code first_k_dense_replace} stays, so its first layer is
     * dense and its MoE layers start at 2 layers; DeepSeek's {@code first_k_dense_replace} is capped at
     * {@code layers − 1}, so that at least one layer is an MoE layer; gpt-oss's {@code layer_types} keeps its first
     * {@code layers}); {@code torch_dtype} (and {@code dtype}, when present) say {@code dtype}, and
     * {@code quantization_config} is dropped (gpt-oss's MXFP4 and DeepSeek's FP8 weights are written in {@code dtype}).
     * Every other field is the real model's.
     */
    public ObjectNode config(int layers, DType dtype) {
        if (layers < 1) {
            throw new IllegalArgumentException("layers must be ≥ 1, got " + layers);
        }
        ObjectNode config = config();
        config.put("num_hidden_layers", layers);
        JsonNode mlpOnly = config.get("mlp_only_layers");
        if (mlpOnly != null && mlpOnly.isArray()) {
            ArrayNode kept = JSON.createArrayNode();
            mlpOnly.forEach(index -> {
                if (index.asInt() < layers) {
                    kept.add(index);
                }
            });
            config.set("mlp_only_layers", kept);
        }
        JsonNode layerTypes = config.get("layer_types");
        if (layerTypes != null && layerTypes.isArray()) {
            ArrayNode kept = JSON.createArrayNode();
            for (int l = 0; l < Math.min(layers, layerTypes.size()); l++) {
                kept.add(layerTypes.get(l));
            }
            config.set("layer_types", kept);
        }
        config.remove("quantization_config");
        if (config.has("first_k_dense_replace") && !config.path("model_type").asText().equals("glm4_moe")) {
            config.put("first_k_dense_replace", Math.min(config.get("first_k_dense_replace").asInt(), layers - 1));
        }
        if (config.has("max_window_layers")) {
            config.put("max_window_layers", Math.min(config.get("max_window_layers").asInt(), layers));
        }
        config.put("torch_dtype", torchName(dtype));
        if (config.has("dtype")) {
            config.put("dtype", torchName(dtype));
        }
        return config;
    }

    /** bfloat16, float16, float32: the torch spelling of config.json. */
    public static String torchName(DType dtype) {
        return switch (dtype) {
            case BF16 -> "bfloat16";
            case F16 -> "float16";
            case F32 -> "float32";
            default -> throw new IllegalArgumentException("no torch float dtype for " + dtype);
        };
    }

    private static DType dtypeOf(String torchName) {
        return switch (torchName) {
            case "bfloat16" -> DType.BF16;
            case "float16" -> DType.F16;
            case "float32" -> DType.F32;
            default -> throw new IllegalStateException("unexpected torch_dtype " + torchName);
        };
    }
}
