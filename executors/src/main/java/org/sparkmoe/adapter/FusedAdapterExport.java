package org.sparkmoe.adapter;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.NamedTensor;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;

/**
 * A per-expert adapter rewritten exactly as a PEFT fused-expert adapter ({@link FusedAdapterFormat}, the shapes of
 * PEFT ≥ 0.19.1, which {@link FusedAdapterTensors} reads back): {@code target_parameters} on
 * {@code mlp.experts.gate_up_proj} [E, 2I, D] and/or {@code mlp.experts.down_proj} [E, D, I], target_modules empty.
 *
 * <p>PEFT gives gate_up_proj one A per expert for the concatenated [2I] output, SparkMoE a separate A for gate (w1) and
 * up (w3), so the fused adapter has rank r' = 2r: A'_e = [A_gate_e; A_up_e] [2r, D], B'_e = [[B_gate_e, 0], [0,
 * B_up_e]] [2I, 2r]; down_proj is padded to rank 2r with zero rows of A and zero columns of B; lora_alpha' = 2·alpha, so
 * alpha'/r' = alpha/r. An untargeted gate or up contributes zero blocks. Without gate and up, the rank stays r. Every
 * ΔW_e is the same: ΔW'_e = B'_e·A'_e stacks B_gate_e·A_gate_e over B_up_e·A_up_e. On disk A' rows are expert-major
 * (row e·r' + j) and B' columns rank-major (column j·E + e); with both parameters targeted, gate_up_proj's keys carry
 * the extra {@code base_layer.} (PEFT nests its wrapper inside down_proj's). A trained router is saved as in a
 * per-expert adapter.
 *
 * <p>gpt-oss: its parameters are stored transposed ({@code is_transposed}: gate_up_proj [E, D, 2I], down_proj
 * [E, I, D]), so PEFT reads in = D, out = 2I (down: in = I, out = D) without swapping and adds ΔW_e = (B'_e·A'_e)ᵀ;
 * gate and up are interleaved by output, so B'_e places B_gate_e's row k at row 2k and B_up_e's at 2k + 1. The router
 * is saved with its bias under {@code mlp.router}.
 */
final class FusedAdapterExport {
    /** The PEFT release whose shapes and keys are written, recorded as adapter_config.json's peft_version. */
    static final String PEFT_VERSION = "0.21.0";

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private final PeftAdapter adapter;
    private final ModelConfig model;
    private final CheckpointLayout layout;
    private final boolean gateUp;
    private final boolean down;
    private final int rank;

    FusedAdapterExport(PeftAdapter adapter) {
        this.adapter = adapter;
        this.model = adapter.model();
        this.layout = new CheckpointLayout(model.modelType);
        List<Projection> targets = adapter.config().targets();
        this.gateUp = targets.contains(Projection.GATE) || targets.contains(Projection.UP);
        this.down = targets.contains(Projection.DOWN);
        this.rank = gateUp ? 2 * adapter.config().r() : adapter.config().r();
    }

    /** adapter_config.json: the adapter's, at rank r' with lora_alpha scaled alike, on target_parameters. */
    String configJson() {
        AdapterConfig c = adapter.config();
        AdapterConfig fused = new AdapterConfig(rank, c.loraAlpha() * rank / c.r(), c.targets(), c.trainRouter(),
                c.baseModelNameOrPath());
        try {
            ObjectNode root = (ObjectNode) JSON.readTree(fused.toJson(model));
            root.put("peft_version", PEFT_VERSION);
            root.putArray("target_modules");
            var parameters = root.putArray("target_parameters");
            if (gateUp) {
                parameters.add("mlp.experts." + FusedAdapterFormat.GATE_UP);
            }
            if (down) {
                parameters.add("mlp.experts." + FusedAdapterFormat.DOWN);
            }
            return JSON.writeValueAsString(root) + "\n";
        } catch (IOException e) {
            throw new UncheckedIOException("serialising adapter_config.json", e);
        }
    }

    /** adapter_model.safetensors: per MoE layer gate_up_proj's then down_proj's lora_A and lora_B, then the router. */
    List<NamedTensor> tensors() {
        List<NamedTensor> out = new ArrayList<>();
        long d = model.hidden_size;
        long i = model.expert_intermediate_size;
        for (int l = 0; l < model.num_hidden_layers; l++) {
            if (!model.isMoeLayer(l)) {
                continue;
            }
            String outer = AdapterKeys.PEFT_PREFIX + "model.layers." + l + ".mlp.experts.";
            boolean interleaved = model.clamped_experts;   // gpt-oss: gate row k at 2k, up row k at 2k + 1
            if (gateUp) {
                Fused f = new Fused(d, 2 * i);
                f.place(l, Projection.GATE, 0, 0, interleaved ? 2 : 1);
                f.place(l, Projection.UP, adapter.config().r(), interleaved ? 1 : i, interleaved ? 2 : 1);
                f.addTo(out, down ? outer + "base_layer." : outer);
            }
            if (down) {
                Fused f = new Fused(i, d);
                f.place(l, Projection.DOWN, 0, 0, 1);
                f.addTo(out, outer);
            }
            if (adapter.config().trainRouter() && model.clamped_experts) {
                out.add(new NamedTensor.Floats(AdapterKeys.peftGptOssRouter(l, "weight"),
                        adapter.state().get(layout.routerGate(l))));
                out.add(new NamedTensor.Floats(AdapterKeys.peftGptOssRouter(l, "bias"),
                        adapter.state().get(layout.routerBias(l))));
            } else if (adapter.config().trainRouter()) {
                out.add(new NamedTensor.Floats(AdapterKeys.peftRouter(l), adapter.state().get(layout.routerGate(l))));
            }
            if (adapter.writesRouterBiases()) {
                out.add(new NamedTensor.Floats(AdapterKeys.peftRouterBias(l), adapter.routerBias(l)));
            }
        }
        return out;
    }

    /** One fused parameter's lora_A [E·r', cols] and lora_B [rows, r'·E], zero where no projection is placed. */
    private final class Fused {
        private final long cols;
        private final long rows;
        private final float[] a;
        private final float[] b;

        Fused(long cols, long rows) {
            this.cols = cols;
            this.rows = rows;
            this.a = new float[Math.toIntExact(model.num_experts * rank * cols)];
            this.b = new float[Math.toIntExact(rows * rank * model.num_experts)];
        }

        /**
         * Projection p's A_e at rank rows rankOffset.., its B_e at output rows rowOffset, rowOffset + rowStep, …, if p
         * is targeted.
         */
        void place(int l, Projection p, int rankOffset, long rowOffset, int rowStep) {
            if (!adapter.config().targets().contains(p)) {
                return;
            }
            int e = model.num_experts;
            int r = adapter.config().r();
            float[] av = floats(adapter.state().get(AdapterKeys.loraA(layout, l, p)));  // [E, r, cols]
            INDArray stackedB = adapter.state().get(AdapterKeys.loraB(layout, l, p));  // [E, out, r]
            long out = stackedB.size(1);
            float[] bv = floats(stackedB);
            for (int x = 0; x < e; x++) {
                for (int j = 0; j < r; j++) {
                    System.arraycopy(av, (int) (((long) x * r + j) * cols), a,
                            (int) (((long) x * rank + rankOffset + j) * cols), (int) cols);
                    for (long row = 0; row < out; row++) {
                        b[(int) ((rowOffset + row * rowStep) * rank * e + (long) (rankOffset + j) * e + x)] =
                                bv[(int) (((long) x * out + row) * r + j)];
                    }
                }
            }
        }

        void addTo(List<NamedTensor> out, String prefix) {
            long er = (long) model.num_experts * rank;
            out.add(new NamedTensor.Floats(prefix + "lora_A.weight", Nd4j.create(a, new long[] {er, cols}, 'c')));
            out.add(new NamedTensor.Floats(prefix + "lora_B.weight", Nd4j.create(b, new long[] {rows, er}, 'c')));
        }
    }

    private static float[] floats(INDArray array) {
        return array.dup('c').data().asFloat();
    }
}
