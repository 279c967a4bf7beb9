package org.sparkmoe.adapter;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.model.ModelSchema;

import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

/** Merging W_e += (alpha / r) · B_e · A_e, checked element by element in float64 against the stored weights. */
class MergedTensorsTest {

    /** Every tensor the tiny Mixtral config implies, seeded normal values. */
    private static TensorSource randomCheckpoint(ModelConfig model) {
        Nd4j.getRandom().setSeed(5);
        Map<String, INDArray> tensors = new HashMap<>();
        ModelSchema.expected(model).forEach((name, shape) -> tensors.put(name, Nd4j.randn(DataType.FLOAT, shape)));
        return new TensorSource() {
            @Override
            public boolean has(String name) {
                return tensors.containsKey(name);
            }

            @Override
            public long[] shape(String name) {
                return tensors.get(name).shape();
            }

            @Override
            public INDArray readFloat(String name) {
                return tensors.get(name).dup('c');
            }

            @Override
            public String describe() {
                return "random checkpoint";
            }
        };
    }

    @Test
    void targetedExpertsGetTheScaledProductAndTheRouterIsReplaced() {
        ModelConfig model = AdapterFixtures.mixtral();
        AdapterConfig config = new AdapterConfig(3, 12, List.of(Projection.UP, Projection.DOWN), true, null);
        PeftAdapter adapter = PeftAdapter.of(model, config, AdapterFixtures.randomState(model, config, 9));
        TensorSource base = randomCheckpoint(model);
        MergedTensors merged = new MergedTensors(base, adapter);
        CheckpointLayout layout = new CheckpointLayout(model.modelType);
        for (int[] le : new int[][] {{0, 0}, {1, 5}, {3, 7}}) {
            int l = le[0];
            int e = le[1];
            for (Projection p : config.targets()) {
                INDArray w = base.readFloat(layout.expert(l, e, p)); // [out, in]
                INDArray a = adapter.state().get(AdapterKeys.loraA(layout, l, p)).slice(e); // [R, in]
                INDArray b = adapter.state().get(AdapterKeys.loraB(layout, l, p)).slice(e); // [out, R]
                INDArray got = merged.readFloat(layout.expert(l, e, p));
                assertArrayEquals(w.shape(), got.shape());
                double worst = 0;
                for (int o = 0; o < w.rows(); o++) {
                    for (int i = 0; i < w.columns(); i++) {
                        double delta = 0;
                        double magnitude = Math.abs(w.getDouble(o, i));
                        for (int r = 0; r < config.r(); r++) {
                            delta += b.getDouble(o, r) * a.getDouble(r, i);
                            magnitude += 4.0 * Math.abs(b.getDouble(o, r) * a.getDouble(r, i));
                        }
                        double want = w.getDouble(o, i) + 4.0 * delta; // alpha / r = 12 / 3
                        // float32 rounding of a sum of R + 1 terms: a few ulps of the terms' magnitude
                        worst = Math.max(worst, Math.abs(got.getDouble(o, i) - want) / magnitude);
                    }
                }
                assertEquals(0, worst, 1e-6, layout.expert(l, e, p));
            }
            // w1 is not targeted: bit-identical to the base
            assertEquals(base.readFloat(layout.expert(l, e, Projection.GATE)),
                    merged.readFloat(layout.expert(l, e, Projection.GATE)));
            assertNotEquals(base.readFloat(layout.expert(l, e, Projection.UP)),
                    merged.readFloat(layout.expert(l, e, Projection.UP)));
        }
        assertEquals(adapter.state().get(layout.routerGate(2)), merged.readFloat(layout.routerGate(2)));
        assertEquals(base.readFloat(CheckpointLayout.attention(1, 'q', "weight")),
                merged.readFloat(CheckpointLayout.attention(1, 'q', "weight")));
        // reading twice gives the same values: the base tensor is not merged into twice
        assertEquals(merged.readFloat(layout.expert(1, 2, Projection.DOWN)), merged.readFloat(layout.expert(1, 2, Projection.DOWN)));
    }

    /**
     * LoRA on the shared expert (qwen2_moe's gated one, glm4_moe's ungated ones), random weights: applied unmerged
     * ({@link AdaptedModel}) the logits equal those of the merged checkpoint ({@link MergedTensors}) within AdapterTest's
     * 1e-5 of the largest, and the shared expert's LoRA moves them (the same routed LoRA without it differs).
     */
    @Test
    void sharedExpertLoraAppliedUnmergedEqualsMerged() {
        for (ModelConfig model : List.of(AdapterFixtures.qwen(), AdapterFixtures.glm())) {
            AdapterConfig config = new AdapterConfig(2, 4, List.of(Projection.GATE, Projection.DOWN), false, null, true);
            Map<String, INDArray> state = AdapterFixtures.randomState(model, config, 13);
            PeftAdapter adapter = PeftAdapter.of(model, config, state);
            AdapterConfig routedOnly = new AdapterConfig(2, 4, config.targets(), false, null);
            Map<String, INDArray> routedState = new java.util.LinkedHashMap<>(state);
            routedState.keySet().removeIf(k -> k.contains("shared_expert"));
            TensorSource base = randomCheckpoint(model);
            org.sparkmoe.kernels.GroupedGemm gemm = new org.sparkmoe.kernels.Nd4jGroupedGemm();
            org.sparkmoe.model.MoeTransformer baseModel = org.sparkmoe.model.ModelLoader.load(model, base, gemm);
            int[][] tokens = {{1, 5, 9, 2, 7, 3, 11, 4}, {8, 6, 0, 10, 12, 2, 1, 9}};
            INDArray adapted = AdaptedModel.of(baseModel, adapter).forward(tokens, model.num_experts_per_tok, false)
                    .logits();
            INDArray merged = org.sparkmoe.model.ModelLoader.load(model, new MergedTensors(base, adapter), gemm)
                    .forward(tokens, model.num_experts_per_tok, false).logits();
            INDArray withoutShared = AdaptedModel.of(baseModel, PeftAdapter.of(model, routedOnly, routedState))
                    .forward(tokens, model.num_experts_per_tok, false).logits();
            double scale = adapted.amaxNumber().doubleValue();
            String type = model.modelType.name();
            double diff = adapted.sub(merged).amaxNumber().doubleValue();
            org.junit.jupiter.api.Assertions.assertTrue(diff <= 1e-5 * scale, type + ": unmerged vs merged " + diff
                    + " of " + scale);
            double moved = adapted.sub(withoutShared).amaxNumber().doubleValue();
            org.junit.jupiter.api.Assertions.assertTrue(moved > 1e-3 * scale, type + ": the shared expert's LoRA moved "
                    + "the logits by " + moved + " of " + scale);
        }
    }
}
