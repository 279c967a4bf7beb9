package org.sparkmoe.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.sparkmoe.cuda.ReferenceExpertLayer;
import org.sparkmoe.experts.DeviceExperts;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.GradientCheck;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.model.ModelLoader;
import org.sparkmoe.model.MoeTransformer;
import org.sparkmoe.kernels.Nd4jGroupedGemm;

/**
 * The tiny Mixtral with every MoE layer's experts on a device layer ({@link DeviceExperts}), with the float64
 * {@link ReferenceExpertLayer} standing in for the GPU, against the same model on the CPU: the logits of an eval
 * forward, and train steps with LoRA on all three projections and a trainable router (loss, gradient norm, the
 * parameters after three steps). What a GPU run checks the same way within bf16 tolerance; here the layer is exact,
 * so the tolerance is float32's.
 */
class DeviceExpertsModelTest {
    private static final LoraSpec ALL = new LoraSpec(EnumSet.allOf(Projection.class), 8, 16.0, true);
    private final List<ReferenceExpertLayer> made = new ArrayList<>();

    private MoeTransformer onReferenceLayers() {
        Path dir = TinyModels.folder(TinyModels.MIXTRAL);
        Configuration conf = new Configuration();
        try (Checkpoint checkpoint = Checkpoint.open(dir, conf)) {
            return ModelLoader.load(ModelFolder.readConfig(dir, conf), checkpoint, new Nd4jGroupedGemm(),
                    (l, w) -> new DeviceExperts("decoder layer " + l, rank -> reference(w, rank)));
        }
    }

    private ReferenceExpertLayer reference(ExpertWeights w, int rank) {
        ReferenceExpertLayer layer = new ReferenceExpertLayer(w.experts(), w.hidden(), w.intermediate(), rank, 1.0,
                w.w1().toArray(DataType.FLOAT).data().asFloat(), w.w3().toArray(DataType.FLOAT).data().asFloat(),
                w.w2().toArray(DataType.FLOAT).data().asFloat());
        made.add(layer);
        return layer;
    }

    @Test
    void evalLogitsMatchTheCpu() {
        MoeTransformer cpu = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        MoeTransformer device = onReferenceLayers();
        assertTrue(device.layers().get(0).moe().experts() instanceof FullExperts);
        int[][] windows = TinyModels.windows(cpu, 2, 16, 11);
        assertClose(cpu.logits(windows), device.logits(windows), 1e-4, "logits");
        assertEquals(4, made.size(), "one layer per MoE layer");
        device.release();
        assertTrue(made.stream().allMatch(ReferenceExpertLayer::closed), "releasing the model closes its layers");
    }

    /**
     * Two steps on each, then every gradient at the CPU run's state from both models. (The parameters themselves are
     * not compared: AdamW's first steps move each by about the learning rate times the sign of its gradient, so a
     * gradient near zero whose float32 rounding differs flips a whole step.)
     */
    @Test
    void trainStepsAndGradientsMatchTheCpu() {
        MoeTransformer cpu = TinyModels.load(TinyModels.MIXTRAL, DataType.FLOAT);
        MoeTransformer device = onReferenceLayers();
        int[][] windows = TinyModels.windows(cpu, 2, 16, 12);
        TrainOptions opts = TrainOptions.defaults(ALL, new LrSchedule(1e-2, 0, 4), 5);
        TrainState a = TrainState.init(cpu, ALL, 6, DataType.FLOAT);
        TrainState b = TrainState.init(device, ALL, 6, DataType.FLOAT);
        for (int step = 0; step < 2; step++) {
            StepResult want = TrainStep.run(cpu, a, windows, opts);
            StepResult got = TrainStep.run(device, b, windows, opts);
            assertEquals(want.loss(), got.loss(), 1e-5 * Math.abs(want.loss()), "loss at step " + step);
            assertEquals(want.gradNorm(), got.gradNorm(), 1e-4 * want.gradNorm(), "gradient norm at step " + step);
        }
        TrainStep.Evaluation want = TrainStep.evaluate(cpu, a, windows, opts);
        TrainStep.Evaluation got = TrainStep.evaluate(device, a, windows, opts);
        assertEquals(want.loss(), got.loss(), 1e-5 * Math.abs(want.loss()));
        assertEquals(want.grads().keySet(), got.grads().keySet());
        for (String key : want.grads().keySet()) {
            assertClose(want.grads().get(key), got.grads().get(key), 1e-4, key);
        }
        assertEquals(4, made.size(), "rank 8 holds the LoRA: no layer remade");
    }

    private static void assertClose(INDArray expected, INDArray actual, double tolerance, String what) {
        GradientCheck.assertRelativeL2(expected, actual, tolerance, what);
    }
}
