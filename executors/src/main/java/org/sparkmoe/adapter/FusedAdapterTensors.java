package org.sparkmoe.adapter;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.adapter.FusedAdapterFormat.Generation;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.SafeTensorsFile;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Reads a fused-expert PEFT adapter ({@link FusedAdapterFormat}) into the stacked per-projection trainable state, the
 * form every other part of SparkMoE applies. Per MoE layer and targeted parameter [E, rows, cols], with
 * A_e = lora_A rows e·r..e·r+r−1 and B_e = lora_B columns {j·E + e : j < r}:
 * <pre>
 *   ≥ 0.19.1: A [E·r, cols], B [rows, r·E]:  ΔW_e = B_e · A_e   [rows, cols]
 *   ≤ 0.19.0: A [E·r, rows], B [cols, r·E]:  ΔW_e = A_eᵀ · B_eᵀ  [rows, cols]
 * </pre>
 * so ΔW_e = B'·A' with A' [r, cols] and B' [rows, r]: A' = A_e, B' = B_e (≥ 0.19.1) or A' = B_eᵀ, B' = A_eᵀ
 * (≤ 0.19.0). For gate_up_proj (rows 2I, cols D) the gate gets B' rows 0..I−1 and the up rows I..2I−1, both with
 * A'; for down_proj (rows D, cols I) it is the down LoRA itself. Only transposes and slices: the per-expert state
 * holds the very same float values, so eval of a fused adapter equals eval of its per-expert equivalent bit for bit.
 *
 * <p>The generation is the PEFT version's (--peft-version, else adapter_config.json's peft_version) when one is
 * known, else the shapes' (one PEFT wrote both parameters, so one generation fits both); when both generations fit
 * every shape (gate_up_proj alone with D = 2I, down_proj alone with D = I, or both) and no version says which, the
 * adapter is refused in one line.
 */
final class FusedAdapterTensors {
    private final ModelConfig model;
    private final AdapterConfig config;
    private final FusedAdapterFormat format;
    private final Path source;
    private final CheckpointLayout layout;

    FusedAdapterTensors(ModelConfig model, AdapterConfig config, FusedAdapterFormat format, Path source) {
        this.model = model;
        this.config = config;
        this.format = format;
        this.source = source;
        this.layout = new CheckpointLayout(model.modelType);
    }

    /** Which wrapper holds which parameter, and the PEFT generation of the shapes. */
    private record Layout(Map<String, String> prefixOf, Generation generation) {
    }

    /** The stacked state (contract order) assembled from {@code file}. */
    LinkedHashMap<String, INDArray> stack(SafeTensorsFile file) {
        LinkedHashMap<String, INDArray> state = new LinkedHashMap<>();
        PeftAdapter.expectedState(model, config).forEach((key, shape) ->
                state.put(key, Nd4j.create(DataType.FLOAT, shape, 'c')));
        Set<String> used = new HashSet<>();
        int e = model.num_experts;
        int r = config.r();
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (!model.isMoeLayer(l)) {
                continue;
            }
            Layout found = layout(file, l);
            for (String parameter : format.parameters()) {
                boolean gateUp = parameter.equals(FusedAdapterFormat.GATE_UP);
                String a = found.prefixOf().get(parameter) + "lora_A.weight";
                String b = found.prefixOf().get(parameter) + "lora_B.weight";
                used.add(a);
                used.add(b);
                INDArray la = file.readFloat(a);                                        // [E·r, cols|rows]
                INDArray lb = file.readFloat(b);                                        // [rows|cols, r·E]
                boolean current = found.generation() == Generation.FROM_0_19_1;
                for (int x = 0; x < e; x++) {
                    INDArray aE = expertRows(la, x, r);                                 // [r, ·]
                    INDArray bE = expertColumns(lb, x, r, e);                           // [·, r]
                    INDArray aPrime = current ? aE : bE.transpose().dup('c');   // [r, cols]
                    INDArray bPrime = current ? bE : aE.transpose().dup('c');   // [rows, r]
                    if (gateUp && model.clamped_experts) {
                        // gpt-oss: gate_up_proj's outputs interleave gate (even) and up (odd)
                        long twoI = 2L * model.expert_intermediate_size;
                        put(state, l, Projection.GATE, x, aPrime, bPrime.get(NDArrayIndex.interval(0, 2, twoI),
                                NDArrayIndex.all()));
                        put(state, l, Projection.UP, x, aPrime, bPrime.get(NDArrayIndex.interval(1, 2, twoI),
                                NDArrayIndex.all()));
                    } else if (gateUp) {
                        long i = model.expert_intermediate_size;
                        put(state, l, Projection.GATE, x, aPrime, bPrime.get(NDArrayIndex.interval(0, i),
                                NDArrayIndex.all()));
                        put(state, l, Projection.UP, x, aPrime, bPrime.get(NDArrayIndex.interval(i, 2 * i),
                                NDArrayIndex.all()));
                    } else {
                        put(state, l, Projection.DOWN, x, aPrime, bPrime);
                    }
                }
            }
            if (config.trainRouter() && model.clamped_experts) {
                readRouter(file, AdapterKeys.peftGptOssRouter(l, "weight"), new long[] {e, model.hidden_size},
                        state.get(layout.routerGate(l)), used);
                readRouter(file, AdapterKeys.peftGptOssRouter(l, "bias"), new long[] {e},
                        state.get(layout.routerBias(l)), used);
            } else if (config.trainRouter()) {
                String key = AdapterKeys.peftRouter(l);
                if (!file.has(key)) {
                    throw new AdapterFormatException(source + ": missing " + key + " (modules_to_save names the routers)");
                }
                long[] shape = file.info(key).shape();
                if (!Arrays.equals(shape, new long[] {e, model.hidden_size})) {
                    throw new AdapterFormatException(source + ": " + key + " has shape " + Arrays.toString(shape)
                            + " but the model implies " + Arrays.toString(new long[] {e, model.hidden_size}));
                }
                state.get(layout.routerGate(l)).assign(file.readFloat(key));
                used.add(key);
                if (model.routing.scoreCorrectionBias()) {
                    used.add(AdapterTensors.checkRouterBias(file, source, model, l));
                }
            }
        }
        for (String name : file.names()) {
            if (!used.contains(name)) {
                throw new AdapterFormatException(source + ": unexpected key " + name + " (adapter_config.json targets "
                        + "the parameters " + format.parameters() + (config.trainRouter() ? " and the routers" : "")
                        + ")");
            }
        }
        return state;
    }

    /** gpt-oss: a saved router tensor of {@code shape} into {@code into}; throws naming a missing or misshapen key. */
    private void readRouter(SafeTensorsFile file, String key, long[] shape, INDArray into, Set<String> used) {
        if (!file.has(key)) {
            throw new AdapterFormatException(source + ": missing " + key + " (modules_to_save names the routers)");
        }
        if (!Arrays.equals(file.info(key).shape(), shape)) {
            throw new AdapterFormatException(source + ": " + key + " has shape " + Arrays.toString(file.info(key).shape())
                    + " but the model implies " + Arrays.toString(shape));
        }
        into.assign(file.readFloat(key).reshape(shape));
        used.add(key);
    }

    /**
     * The one assignment of parameters to wrappers and generation that every shape of layer {@code l} fits (with
     * a PEFT version, only its generation is tried). With two targets, each generation is tried with gate_up_proj in
     * the inner wrapper first (transformers declares it before down_proj), then the other way round.
     */
    private Layout layout(SafeTensorsFile file, int l) {
        String outer = AdapterKeys.PEFT_PREFIX + "model.layers." + l + ".mlp.experts.";
        String inner = outer + "base_layer.";
        List<Map<String, String>> assignments = new ArrayList<>();
        if (format.parameters().size() == 1) {
            assignments.add(Map.of(format.parameters().get(0), outer));
        } else {
            assignments.add(Map.of(FusedAdapterFormat.GATE_UP, inner, FusedAdapterFormat.DOWN, outer));
            assignments.add(Map.of(FusedAdapterFormat.DOWN, inner, FusedAdapterFormat.GATE_UP, outer));
        }
        for (Map<String, String> prefixOf : assignments) {
            for (String prefix : prefixOf.values()) {
                for (String key : new String[] {prefix + "lora_A.weight", prefix + "lora_B.weight"}) {
                    if (!file.has(key)) {
                        throw new AdapterFormatException(source + ": missing " + key + " (target_parameters "
                                + format.parameters() + " in every MoE layer)");
                    }
                }
            }
        }
        Generation declared = format.declaredGeneration();
        if (model.clamped_experts && declared == Generation.BEFORE_0_19_1) {
            throw new AdapterFormatException(source + ": a gpt_oss adapter of PEFT " + format.peftVersion()
                    + " (before 0.19.1) is not supported: only the shapes of PEFT ≥ 0.19.1 were checked for gpt_oss");
        }
        List<Generation> generations = declared != null ? List.of(declared) : model.clamped_experts
                ? List.of(Generation.FROM_0_19_1) : List.of(Generation.FROM_0_19_1, Generation.BEFORE_0_19_1);
        List<Layout> fits = new ArrayList<>();
        for (Map<String, String> prefixOf : assignments) {
            for (Generation g : generations) {
                if (prefixOf.entrySet().stream().allMatch(p -> fits(file, p.getValue(), p.getKey(), g))) {
                    fits.add(new Layout(prefixOf, g));
                }
            }
        }
        if (fits.isEmpty()) {
            StringBuilder found = new StringBuilder();
            for (String prefix : new java.util.TreeSet<>(assignments.get(0).values())) {
                found.append(' ').append(prefix.substring(AdapterKeys.PEFT_PREFIX.length())).append("lora_A ")
                        .append(Arrays.toString(file.info(prefix + "lora_A.weight").shape())).append(" lora_B ")
                        .append(Arrays.toString(file.info(prefix + "lora_B.weight").shape()));
            }
            throw new AdapterFormatException(source + ": the LoRA shapes of layer " + l + " (" + found.toString().trim()
                    + ") fit no PEFT layout of " + format.parameters() + " for E=" + model.num_experts + ", r="
                    + config.r() + ", D=" + model.hidden_size + ", I=" + model.expert_intermediate_size
                    + (declared != null ? " with PEFT " + format.peftVersion() : "")
                    + " (≥ 0.19.1: lora_A [E·r, cols], lora_B [rows, r·E]; ≤ 0.19.0: lora_A [E·r, rows],"
                    + " lora_B [cols, r·E];"
                    + " gate_up_proj rows 2I, cols D; down_proj rows D, cols I)");
        }
        Layout first = fits.get(0);
        boolean ambiguous = fits.stream().anyMatch(f -> f.prefixOf().equals(first.prefixOf())
                && f.generation() != first.generation());
        if (ambiguous) {
            throw new AdapterFormatException(source + ": ambiguous LoRA shapes: for " + format.parameters()
                    + " with D = " + model.hidden_size + " and I = " + model.expert_intermediate_size + " PEFT ≤ 0.19.0 "
                    + "and ≥ 0.19.1 write the same shapes, and adapter_config.json has no peft_version; pass "
                    + "--peft-version V (the PEFT release that saved it, e.g. 0.21.0) or add \"peft_version\" to "
                    + "adapter_config.json");
        }
        return first;
    }

    /** Whether {@code prefix}'s lora_A and lora_B have {@code parameter}'s shapes in generation {@code g}. */
    private boolean fits(SafeTensorsFile file, String prefix, String parameter, Generation g) {
        boolean gateUp = parameter.equals(FusedAdapterFormat.GATE_UP);
        long rows = gateUp ? 2L * model.expert_intermediate_size : model.hidden_size;
        long cols = gateUp ? model.hidden_size : model.expert_intermediate_size;
        long er = (long) model.num_experts * config.r();
        long[] a = file.info(prefix + "lora_A.weight").shape();
        long[] b = file.info(prefix + "lora_B.weight").shape();
        return g == Generation.FROM_0_19_1
                ? Arrays.equals(a, new long[] {er, cols}) && Arrays.equals(b, new long[] {rows, er})
                : Arrays.equals(a, new long[] {er, rows}) && Arrays.equals(b, new long[] {cols, er});
    }

    /** Rows x·r .. x·r+r−1 of {@code a} [E·r, n]: expert x's A, [r, n]. */
    private static INDArray expertRows(INDArray a, int x, int r) {
        long n = a.size(1);
        float[] v = a.data().asFloat();
        float[] out = new float[(int) (r * n)];
        System.arraycopy(v, (int) ((long) x * r * n), out, 0, out.length);
        return Nd4j.create(out, new long[] {r, n}, 'c');
    }

    /** Columns j·E + x (j < r) of {@code b} [m, r·E]: expert x's B, [m, r]. */
    private static INDArray expertColumns(INDArray b, int x, int r, int e) {
        long m = b.size(0);
        float[] v = b.data().asFloat();
        float[] out = new float[(int) (m * r)];
        for (int row = 0; row < m; row++) {
            for (int j = 0; j < r; j++) {
                out[row * r + j] = v[row * r * e + j * e + x];
            }
        }
        return Nd4j.create(out, new long[] {m, r}, 'c');
    }

    private void put(LinkedHashMap<String, INDArray> state, int l, Projection p, int expert, INDArray a, INDArray b) {
        state.get(AdapterKeys.loraA(layout, l, p)).slice(expert).assign(a);  // [r, in]
        state.get(AdapterKeys.loraB(layout, l, p)).slice(expert).assign(b);  // [out, r]
    }
}
