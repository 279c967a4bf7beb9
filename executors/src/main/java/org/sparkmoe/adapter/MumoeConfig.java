package org.sparkmoe.adapter;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.AdapterTerms;
import org.sparkmoe.model.AdapterTerms.Key;
import org.sparkmoe.model.AdapterTerms.Site;
import org.sparkmoe.mumoe.GateActivation;
import org.sparkmoe.mumoe.MumoeForm;
import org.sparkmoe.mumoe.MumoeLayer;

/**
 * What a μMoE adapter holds, and its {@code adapter_config.json}: a μMoE layer of {@code experts} experts in CP
 * (ranks [R]) or tensor-ring (ranks [r1, ..., r_{L+2}], one per core of the ring: [r1, r2, r3] flat) form, flat or
 * hierarchical with one gate per level, beside
 * every chosen site of every layer ({@link AdapterTerms}:
 * q_proj, k_proj, v_proj, o_proj of every layer's attention, moe beside every MoE block, mlp beside every dense
 * MLP). A site's tensors are named {@code <site module>.mumoe.<parameter>}, the module being
 * {@code model.layers.<l>.self_attn.<q|k|v|o>_proj}, the MoE block's ({@code model.layers.<l>.block_sparse_moe},
 * {@code model.layers.<l>.mlp}) or the dense MLP's ({@code model.layers.<l>.mlp}), the parameter one
 * of {@link MumoeForm#shapes}: CP {@code gate.l} [I, N_l] and {@code expert.l} [N_l, R] per level l, {@code in}
 * [I, R], {@code out} [O, R]; TR {@code gate.l} [I, N_l] per level l, {@code core.expert} [r1, N, r2] (flat) or
 * {@code core.expert.l} [r_{l+1}, N_l, r_{l+2}] per level l (hierarchical), {@code core.in} [r_{L+1}, I, r_{L+2}],
 * {@code core.out} [r_{L+2}, O, r1]. These are also the training state's keys. It cannot be merged into the
 * base weights: its experts' mixture weights depend on the input.
 *
 * @param form    CP or TR
 * @param experts the experts per level, [N] (flat) or [N_1, ..., N_L], each ≥ 1, N_1···N_L below 2³¹
 * @param ranks   CP [R], TR [r1, ..., r_{L+2}] ([r1, r2, r3] flat), each ≥ 1
 * @param targets the adapted sites (iterated in the order q_proj, k_proj, v_proj, o_proj, moe, mlp)
 * @param gate    each level's gate activation, softmax or entmax-1.5 ({@link GateActivation})
 */
public record MumoeConfig(MumoeForm form, int[] experts, int[] ranks, Set<Site> targets, GateActivation gate)
        implements Serializable {
    public static final String ADAPTER_TYPE = "MUMOE";
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    public MumoeConfig {
        if (form == null) {
            throw new IllegalArgumentException("a μMoE adapter needs a form, cp or tr");
        }
        if (experts == null || experts.length == 0 || Arrays.stream(experts).anyMatch(n -> n < 1)) {
            throw new IllegalArgumentException("--mumoe-experts must be N ≥ 1 or N1,N2,... each ≥ 1, got "
                    + Arrays.toString(experts));
        }
        form.checkLevels(Arrays.stream(experts).asLongStream().toArray(), "--mumoe-experts");
        long product = 1;
        for (int n : experts) {
            product *= n;
            if (product > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("--mumoe-experts " + Arrays.toString(experts) + ": "
                        + "N1·N2·... must be below 2^31 (an expert's number is an int)");
            }
        }
        experts = experts.clone();
        form.checkRanks(ranks, experts.length, "--mumoe-rank");
        ranks = ranks.clone();
        if (targets == null || targets.isEmpty()) {
            throw new IllegalArgumentException("--mumoe-targets must name at least one of q_proj, k_proj, v_proj, "
                    + "o_proj, moe, mlp");
        }
        targets = Collections.unmodifiableSet(EnumSet.copyOf(targets));
        if (gate == null) {
            throw new IllegalArgumentException("a μMoE adapter needs a gate, softmax or entmax15");
        }
    }

    /** A softmax-gated adapter (the default gate). */
    public MumoeConfig(MumoeForm form, int[] experts, int[] ranks, Set<Site> targets) {
        this(form, experts, ranks, targets, GateActivation.SOFTMAX);
    }

    /** A flat softmax-gated adapter of {@code experts} experts. */
    public MumoeConfig(MumoeForm form, int experts, int[] ranks, Set<Site> targets) {
        this(form, new int[] {experts}, ranks, targets);
    }

    /** --mumoe-experts' value: N (flat) or N1,N2,... (one per level). */
    public static int[] parseExperts(String csv, String source) {
        try {
            return Arrays.stream(csv.split(",", -1)).mapToInt(v -> Integer.parseInt(v.trim())).toArray();
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(source + " " + csv + ": expected an integer N, or N1,N2,... for levels");
        }
    }

    /** Comma-separated site names (q_proj, k_proj, v_proj, o_proj, moe, mlp). */
    public static Set<Site> parseTargets(String csv, String source) {
        EnumSet<Site> out = EnumSet.noneOf(Site.class);
        for (String raw : csv.split(",", -1)) {
            out.add(Site.parse(raw.trim(), source));
        }
        return out;
    }

    @Override
    public int[] ranks() {
        return ranks.clone();
    }

    /** [N] or [N_1, ..., N_L]. */
    @Override
    public int[] experts() {
        return experts.clone();
    }

    /** The experts per level, as {@link MumoeForm} takes them. */
    public long[] expertDims() {
        return Arrays.stream(experts).asLongStream().toArray();
    }

    /** N = N_1···N_L, the experts of one site; expert (n_1, ..., n_L) is number ((n_1·N_2 + n_2)·N_3 + ...). */
    public int expertCount() {
        return Arrays.stream(experts).reduce(1, (a, b) -> a * b);
    }

    /** How --mumoe-experts and the resume signature spell the experts: N, or N1,N2,... */
    public String expertsSpelling() {
        return Arrays.stream(experts).mapToObj(Integer::toString).collect(java.util.stream.Collectors.joining(","));
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof MumoeConfig c && form == c.form && Arrays.equals(experts, c.experts)
                && Arrays.equals(ranks, c.ranks) && targets.equals(c.targets) && gate == c.gate;
    }

    @Override
    public int hashCode() {
        return ((form.hashCode() * 31 + Arrays.hashCode(experts)) * 31 + Arrays.hashCode(ranks) * 31
                + targets.hashCode()) * 31 + gate.hashCode();
    }

    @Override
    public String toString() {
        return "μMoE " + form.id() + " N=" + expertsSpelling().replace(",", "×") + " ranks=" + Arrays.toString(ranks)
                + " targets=" + targets.stream().map(Site::id).toList() + " gate=" + gate.id();
    }

    /**
     * One adapted site of the model: its key, the prefix of its tensors' names ({@code <module>.mumoe.}) and the
     * sizes I → O of the projection (or block) it sits beside.
     */
    public record Placement(Key key, String prefix, long in, long out) {
    }

    /**
     * Every adapted site of {@code model}, by layer, then q_proj, k_proj, v_proj, o_proj, moe, mlp: attention sites
     * on every layer, moe on the MoE layers, mlp on the dense layers. Throws for attention sites on a model without
     * grouped-query attention (DeepSeek's MLA), and for moe or mlp when no layer has that kind of feed-forward.
     */
    public List<Placement> placements(ModelConfig model) {
        if (model.mla != null && targets.stream().anyMatch(Site::isAttention)) {
            throw new IllegalArgumentException("--mumoe-targets " + targets.stream().map(Site::id).toList()
                    + ": model_type " + model.modelType.name().toLowerCase(java.util.Locale.ROOT) + " has latent "
                    + "attention (MLA), no q_proj/k_proj/v_proj/o_proj of grouped-query attention; use moe or mlp");
        }
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        long d = model.hidden_size;
        long q = (long) model.num_attention_heads * model.head_dim;
        long kv = (long) model.num_key_value_heads * model.head_dim;
        List<Placement> out = new ArrayList<>();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            for (Site s : targets) {
                Key key = new Key(l, s);
                switch (s) {
                    case Q_PROJ -> out.add(new Placement(key, attention(l, 'q'), d, q));
                    case K_PROJ -> out.add(new Placement(key, attention(l, 'k'), d, kv));
                    case V_PROJ -> out.add(new Placement(key, attention(l, 'v'), d, kv));
                    case O_PROJ -> out.add(new Placement(key, attention(l, 'o'), q, d));
                    case MOE -> {
                        if (model.isMoeLayer(l)) {
                            out.add(new Placement(key, layout.moePrefix(l) + "mumoe.", d, d));
                        }
                    }
                    case MLP -> {
                        if (!model.isMoeLayer(l)) {
                            out.add(new Placement(key, CheckpointLayout.denseMlpPrefix(l) + "mumoe.", d, d));
                        }
                    }
                }
            }
        }
        for (Site ffn : List.of(Site.MOE, Site.MLP)) {
            if (targets.contains(ffn) && out.stream().noneMatch(p -> p.key().site() == ffn)) {
                throw new IllegalArgumentException("--mumoe-targets " + ffn.id() + ": the model has no "
                        + (ffn == Site.MOE ? "MoE layer" : "dense MLP layer (all its layers are MoE layers; use moe)"));
            }
        }
        return out;
    }

    private static String attention(int layer, char proj) {
        return CheckpointLayout.attention(layer, proj, "mumoe.");
    }

    /** Every tensor name and shape the adapter holds on {@code model}, in {@link #placements} order. */
    public LinkedHashMap<String, long[]> expectedState(ModelConfig model) {
        LinkedHashMap<String, long[]> out = new LinkedHashMap<>();
        for (Placement p : placements(model)) {
            form.shapes(p.in(), p.out(), expertDims(), ranks)
                    .forEach((name, shape) -> out.put(p.prefix() + name, shape));
        }
        return out;
    }

    /** Trainable parameters on {@code model}: Σ over sites of the gate and the factors or cores. */
    public long parameterCount(ModelConfig model) {
        long n = 0;
        for (Placement p : placements(model)) {
            n += form.parameterCount(p.in(), p.out(), expertDims(), ranks);
        }
        return n;
    }

    /** The layers over {@code state}'s tensors (held, not copied), one per placement. */
    public AdapterTerms terms(ModelConfig model, Map<String, INDArray> state) {
        Map<Key, MumoeLayer> terms = new LinkedHashMap<>();
        for (Placement p : placements(model)) {
            Map<String, INDArray> params = new LinkedHashMap<>();
            for (String name : form.shapes(p.in(), p.out(), expertDims(), ranks).keySet()) {
                INDArray a = state.get(p.prefix() + name);
                if (a == null) {
                    throw new IllegalArgumentException("the μMoE state has no tensor " + p.prefix() + name + ", which "
                            + this + " implies");
                }
                params.put(name, a);
            }
            terms.put(p.key(), form.layer(params, gate));
        }
        return new AdapterTerms(terms);
    }

    /**
     * {@code adapter_config.json}: adapter_type MUMOE, form, experts (an integer N for a flat adapter, a list
     * [N_1, ..., N_L] for levels), ranks, targets, gate (softmax or entmax15), base_model_name_or_path.
     */
    public String toJson(String baseModel) {
        ObjectNode root = JSON.createObjectNode();
        root.put("adapter_type", ADAPTER_TYPE);
        if (baseModel == null) {
            root.putNull("base_model_name_or_path");
        } else {
            root.put("base_model_name_or_path", baseModel);
        }
        root.put("form", form.id());
        if (experts.length == 1) {
            root.put("experts", experts[0]);
        } else {
            root.putArray("experts")
                    .addAll(Arrays.stream(experts).mapToObj(JSON.getNodeFactory()::numberNode).toList());
        }
        root.putArray("ranks").addAll(Arrays.stream(ranks).mapToObj(JSON.getNodeFactory()::numberNode).toList());
        root.putArray("targets").addAll(targets.stream().map(s -> JSON.getNodeFactory().textNode(s.id())).toList());
        root.put("gate", gate.id());
        try {
            return JSON.writeValueAsString(root) + "\n";
        } catch (IOException e) {
            throw new UncheckedIOException("serialising adapter_config.json", e);
        }
    }

    /** Whether {@code jsonText} is a μMoE adapter's config (adapter_type MUMOE), not a PEFT one. */
    public static boolean isMumoe(String jsonText) {
        try {
            JsonNode type = JSON.readTree(jsonText).get("adapter_type");
            return type != null && ADAPTER_TYPE.equals(type.asText());
        } catch (IOException | RuntimeException e) {
            return false;   // not JSON: the PEFT reader names what is wrong
        }
    }

    /** Reads what {@link #toJson} wrote; every problem is one line naming {@code source} and the field. */
    public static MumoeConfig parse(String jsonText, String source) {
        JsonNode root;
        try {
            root = JSON.readTree(jsonText);
        } catch (IOException e) {
            throw new AdapterFormatException(source + ": malformed JSON: " + e.getMessage().lines().findFirst().orElse(""));
        }
        if (root == null || !root.isObject() || !ADAPTER_TYPE.equals(text(root, "adapter_type", source))) {
            throw new AdapterFormatException(source + ": expected a JSON object with adapter_type \"" + ADAPTER_TYPE
                    + "\"");
        }
        // absent reads as softmax, the only gate before entmax-1.5
        GateActivation gate = root.has("gate") ? gate(text(root, "gate", source), source) : GateActivation.SOFTMAX;
        JsonNode experts = root.get("experts");
        JsonNode ranks = root.get("ranks");
        JsonNode targets = root.get("targets");
        int[] n = experts == null ? null : experts.isArray() ? ints(experts)
                : integer(experts) ? new int[] {experts.asInt()} : null;
        if (n == null) {
            throw new AdapterFormatException(source + ": experts must be an integer or a list of integers (one per "
                    + "level), got " + experts);
        }
        if (ranks == null || !ranks.isArray() || targets == null || !targets.isArray()) {
            throw new AdapterFormatException(source + ": ranks and targets must be arrays, got " + ranks + " and "
                    + targets);
        }
        int[] r = ints(ranks);
        if (r == null) {
            throw new AdapterFormatException(source + ": ranks must hold integers, got " + ranks);
        }
        EnumSet<Site> sites = EnumSet.noneOf(Site.class);
        try {
            for (JsonNode t : targets) {
                sites.add(Site.parse(t.asText(), source + ": targets"));
            }
            return new MumoeConfig(MumoeForm.parse(text(root, "form", source), source + ": form"), n, r,
                    sites, gate);
        } catch (IllegalArgumentException e) {
            throw new AdapterFormatException(source + ": " + e.getMessage());
        }
    }

    /** The gate field's activation; an unknown one is an {@link AdapterFormatException} naming {@code source}. */
    private static GateActivation gate(String id, String source) {
        try {
            return GateActivation.parse(id, source + ": gate");
        } catch (IllegalArgumentException e) {
            throw new AdapterFormatException(e.getMessage());
        }
    }

    private static boolean integer(JsonNode n) {
        return n.isIntegralNumber() && n.canConvertToInt();
    }

    /** The array's integers, or null when one is not an integer. */
    private static int[] ints(JsonNode array) {
        int[] v = new int[array.size()];
        for (int i = 0; i < v.length; i++) {
            if (!integer(array.get(i))) {
                return null;
            }
            v[i] = array.get(i).asInt();
        }
        return v;
    }

    private static String text(JsonNode root, String field, String source) {
        JsonNode n = root.get(field);
        if (n == null || !n.isTextual()) {
            throw new AdapterFormatException(source + ": " + field + " must be a string, got " + n);
        }
        return n.asText();
    }
}
