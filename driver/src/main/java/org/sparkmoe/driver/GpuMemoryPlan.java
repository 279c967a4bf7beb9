package org.sparkmoe.driver;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Locale;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.cuda.CudaMoeLoraLayer;
import org.sparkmoe.cuda.CudaMoeLoraLayer.Precision;
import org.sparkmoe.experts.DeviceExperts;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.kernels.Device;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.model.LayerCache;

/**
 * What {@code --device cuda} puts on each GPU an executor's tasks use, worked out from config.json before Spark
 * starts and printed with the {@link MemoryPlan}: the MoE layers whose experts run on the fused bf16 layer
 * ({@link DeviceExperts}), each holding its weights, LoRA and LoRA gradients ({@link CudaMoeLoraLayer#layerBytes})
 * and its pass buffers at one batch's routed rows ({@link CudaMoeLoraLayer#passBytes}); while a layer uploads, its
 * unpacked weights once more. Not checked against the GPU's memory: the driver does not know the executors' GPUs.
 *
 * @param fusedLayers  MoE layers held on the GPU at once (all of them; with --layerwise the cached pieces)
 * @param moeLayers    the model's MoE layers
 * @param fits         whether the experts fit the fused layer (else none is on it)
 * @param rank         the fused layer's LoRA rank
 * @param rows         routed rows of one batch, T·K
 * @param layerBytes   one layer's weights, LoRA and gradient buffers
 * @param passBytes    one layer's pass buffers at {@code rows}
 * @param uploadBytes  one layer's unpacked weights while it uploads
 */
public record GpuMemoryPlan(int fusedLayers, int moeLayers, boolean fits, int rank, long rows, long layerBytes,
                            long passBytes, long uploadBytes) {

    /**
     * @param loraRank   the experts' LoRA rank (0: none: the layer runs zero factors)
     * @param layersHeld MoE layers a task keeps loaded at once, or 0 for all of them
     */
    public static GpuMemoryPlan of(ModelConfig c, int batchWindows, int window, int loraRank, int layersHeld) {
        int moe = 0;
        for (int l = 0; l < c.num_hidden_layers; l++) {
            moe += c.isMoeLayer(l) ? 1 : 0;
        }
        boolean fits = !c.hasLowRankExperts() && DeviceExperts.fits(c.clamped_experts ? GatedActivation.CLAMPED_SWIGLU
                : GatedActivation.SWIGLU, c.clamped_experts, c.hidden_size, c.expert_intermediate_size);
        int rank = DeviceExperts.layerRank(loraRank);
        long rows = (long) batchWindows * window * c.num_experts_per_tok;
        int held = !fits ? 0 : layersHeld > 0 ? Math.min(layersHeld, moe) : moe;
        return new GpuMemoryPlan(held, moe, fits, rank, rows,
                CudaMoeLoraLayer.layerBytes(Precision.BF16, c.num_experts, c.hidden_size, c.expert_intermediate_size,
                        rank),
                CudaMoeLoraLayer.passBytes(Precision.BF16, c.hidden_size, c.expert_intermediate_size, rank, rows),
                6L * c.num_experts * c.expert_intermediate_size * c.hidden_size);
    }

    /**
     * The GPU part of a job's plan on {@code device}, or null on the CPU.
     *
     * @param adapter    an adapter folder whose adapter_config.json's {@code r} is the LoRA rank, or null (none, or
     *                   a μMoE adapter, which has no {@code r})
     * @param layerwise  whether the job runs as a layer-sequential pass (then {@link LayerCache#MAX_PIECES} pieces)
     */
    public static GpuMemoryPlan forJob(Device device, ModelConfig c, int batchWindows, int window, String adapter,
                                       boolean layerwise, Configuration conf) {
        if (device != Device.CUDA) {
            return null;
        }
        int rank = 0;
        if (adapter != null) {
            Path config = new Path(adapter, PeftAdapter.CONFIG_FILE);
            try (FSDataInputStream in = config.getFileSystem(conf).open(config)) {
                rank = new ObjectMapper().readTree(in).path("r").asInt(0);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + config + ": " + e.getMessage(), e);
            }
        }
        return of(c, batchWindows, window, rank, layerwise ? LayerCache.MAX_PIECES : 0);
    }

    /** Device bytes per GPU: every held layer's own and pass bytes, plus one upload. */
    public long totalBytes() {
        return fits ? fusedLayers * (layerBytes + passBytes) + uploadBytes : 0;
    }

    /** The plan's GPU lines, each starting with "memory plan:". */
    public String describe() {
        String prefix = "memory plan: ";
        if (!fits) {
            return prefix + "gpu (--device cuda): the experts do not fit the fused bf16 layer (gpt-oss, low-rank "
                    + "experts, or D or I not a multiple of " + DeviceExperts.RANK_STEP + "); their products run in "
                    + "fp32 with every operand copied per product, nothing resident\n";
        }
        return prefix + String.format(Locale.ROOT, "gpu (--device cuda) per GPU %s = %d of %d MoE layers × (weights, "
                        + "rank-%d LoRA and its gradients %s + pass buffers %s at %d routed rows) + one layer's upload "
                        + "%s; attention, norms and router stay on the CPU\n", MemoryPlan.size(totalBytes()),
                fusedLayers, moeLayers, rank, MemoryPlan.size(layerBytes), MemoryPlan.size(passBytes), rows,
                MemoryPlan.size(uploadBytes));
    }
}
