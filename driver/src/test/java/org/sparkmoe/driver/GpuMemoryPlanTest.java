package org.sparkmoe.driver;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.model.ModelShape;

/** {@link GpuMemoryPlan}: the fused layer's device bytes by hand arithmetic from moe_lora.cu's allocations. */
class GpuMemoryPlanTest {

    private static ModelConfig synth(ModelShape shape, int layers) {
        return ModelConfig.parse(shape.config(layers, DType.BF16).toString(), shape.shapeName());
    }

    @Test
    void mixtral8x7bAtEightWindowsOf256DoesNotFitOneH100() {
        // E = 8, D = 4096, I = 14336, K = 2; rank-16 LoRA; n = 8 × 256 × 2 = 4096 routed rows
        GpuMemoryPlan plan = GpuMemoryPlan.of(synth(ModelShape.MIXTRAL_8X7B, 32), 8, 256, 16, 0);
        assertTrue(plan.fits());
        assertEquals(32, plan.fusedLayers());
        assertEquals(16, plan.rank());
        assertEquals(4096, plan.rows());
        long weights = 2L * 3 * 8 * 14336 * 4096;                           // W1|W3 and W2 in bf16
        long lora = 2L * 8 * 16 * (3 * 4096 + 5 * 14336) + 4L * 8 * 16 * (2 * 4096 + 4 * 14336);
        assertEquals(weights + lora, plan.layerBytes());
        assertEquals(2L * 4096 * (4 * 4096 + 5 * 14336 + 6 * 16), plan.passBytes());
        assertEquals(weights, plan.uploadBytes());
        assertEquals(32 * (weights + lora + plan.passBytes()) + weights, plan.totalBytes());
        assertTrue(plan.totalBytes() > 80L << 30, "more than an H100 holds: " + plan.totalBytes());
        assertTrue(plan.describe().contains("32 of 32 MoE layers"), plan.describe());
    }

    @Test
    void layerwiseHoldsTheCachedPiecesAndRanksRoundUpToEight() {
        GpuMemoryPlan plan = GpuMemoryPlan.of(synth(ModelShape.QWEN3_30B_A3B, 48), 4, 512, 0, 2);
        assertEquals(2, plan.fusedLayers());
        assertEquals(48, plan.moeLayers());
        assertEquals(8, plan.rank(), "no LoRA: the layer runs rank-8 zeros");
        assertEquals(24, GpuMemoryPlan.of(synth(ModelShape.QWEN3_30B_A3B, 2), 1, 256, 17, 0).rank());
    }

    @Test
    void gptOssExpertsAreNotOnTheFusedLayer() {
        GpuMemoryPlan plan = GpuMemoryPlan.of(synth(ModelShape.GPT_OSS_20B, 2), 1, 256, 16, 0);
        assertFalse(plan.fits());
        assertEquals(0, plan.totalBytes());
        assertTrue(plan.describe().contains("do not fit"), plan.describe());
    }

    @Test
    void theAdaptersRankIsReadFromItsConfig(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("adapter_config.json"), "{\"r\": 12, \"lora_alpha\": 24}");
        ModelConfig c = synth(ModelShape.OLMOE_1B_7B, 2);
        Configuration conf = new Configuration();
        assertEquals(16, GpuMemoryPlan.forJob(Device.CUDA, c, 1, 128, dir.toString(), false, conf).rank());
        assertEquals(8, GpuMemoryPlan.forJob(Device.CUDA, c, 1, 128, null, false, conf).rank());
        assertNull(GpuMemoryPlan.forJob(Device.CPU, c, 1, 128, null, false, conf));
    }
}
