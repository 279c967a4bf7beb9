package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.apache.spark.SparkConf;
import org.junit.jupiter.api.Test;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.experts.CpExperts;
import org.sparkmoe.experts.TrExperts;
import org.sparkmoe.io.DType;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelSchema;
import org.sparkmoe.model.ModelShape;
import org.sparkmoe.mumoe.MumoeForm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.surgery.DenseMergeSurgery;
import org.sparkmoe.surgery.ExpertReduceSurgery;
import org.sparkmoe.surgery.ExpertStack;
import org.sparkmoe.surgery.LayerSurgery;
import org.sparkmoe.surgery.LowRankDistillation;
import org.sparkmoe.surgery.LowRankSurgery;
import org.sparkmoe.surgery.MergeWeights;
import org.sparkmoe.surgery.TruncatedSvd;
import org.sparkmoe.train.CausalLmLoss;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The memory plan's arithmetic on Mixtral-8x7B's shape, the Spark limits it reads, and its refusals. */
class MemoryPlanTest {
    /** Mixtral-8x7B's shape with one layer (the benchmark's synth model). */
    private static final String MIXTRAL_JSON = """
            {"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
             "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8,
             "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 32768,
             "rms_norm_eps": 1e-5, "rope_theta": 1e6}""";
    private static final ModelConfig MIXTRAL_1 = ModelConfig.parse(MIXTRAL_JSON, "mixtral-1");

    private static SparkLimits yarn(String overhead, int cores) {
        SparkConf conf = new SparkConf(false).setMaster("yarn").set("spark.executor.memory", "4g")
                .set("spark.executor.cores", String.valueOf(cores));
        if (overhead != null) {
            conf.set("spark.executor.memoryOverhead", overhead);
        }
        return SparkLimits.of(conf, 2);
    }

    @Test
    void evalActivationsCountStreamAttentionExpertsAndOneLogitBlock() {
        // per token: stream 4·4096 + 2·32·128 + 2·8·128 = 26624, the attention's per-head q, k, v, out
        // 2·32·128 + 2·8·128 = 10240 and lse 2·32 = 64 (no [S, S] scores: blockwise),
        // experts 2·(2·4096 + 3·14336) + 2·8 = 102416: 139344 floats; logits of 256 tokens: 2 · 256 · 32000
        long oneWindow = MemoryPlan.activations(MemoryPlan.Job.EVAL, MIXTRAL_1, 256, false);
        assertEquals((256L * 139344 + 2L * 256 * 32000) * 4, oneWindow);
        // 8 windows: the logits stop at one block of 2^24 elements
        long eight = MemoryPlan.activations(MemoryPlan.Job.EVAL, MIXTRAL_1, 2048, false);
        assertEquals((2048L * 139344 + 2L * (1 << 24)) * 4, eight);
    }

    /**
     * eval --baseline: both checkpoints mapped and both models' widened tensors; per slot the larger forward plus the
     * baseline's final hidden rows and its logit block (here the same shape: 8 windows of 256, one 2^24 block).
     */
    @Test
    void aBaselineAddsItsWeightsItsHiddenRowsAndItsLogitBlock() {
        SparkLimits limits = SparkLimits.of(new SparkConf(false).setMaster("local[2]"), null);
        MemoryPlan eval = MemoryPlan.of(MemoryPlan.Job.EVAL, MIXTRAL_1, 1000, 8, 256, 0, limits);
        MemoryPlan both = eval.withBaseline(MIXTRAL_1, 600, 8, 256);
        assertEquals(1600, both.mappedBytes());
        assertEquals(2 * eval.widenedBytes(), both.widenedBytes());
        assertEquals(eval.activationBytes() + (2048L * 4096 + (1 << 24)) * 4, both.activationBytes());
        // the heap: the model's plan (512 MiB) + 2 slots × the baseline's forward arrays and row (515,072 bytes),
        // in 64 MiB steps
        assertEquals(512L << 20, eval.heapNeededBytes());
        assertEquals(576L << 20, both.heapNeededBytes());
        MemoryPlan train = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 1000, 1, 256, 0, limits);
        assertThrows(IllegalArgumentException.class, () -> train.withBaseline(MIXTRAL_1, 600, 1, 256));
    }

    /** DeepSeek-V3's MLA: q and k of 192 per head, v and the output of 128 per head, the 512 + 64 latent. */
    @Test
    void latentAttentionCountsItsPerHeadWidthsAndTheLatent() {
        ModelConfig v3 = ModelConfig.parse("""
                {"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
                 "moe_intermediate_size": 2048, "num_hidden_layers": 2, "num_attention_heads": 128,
                 "num_key_value_heads": 128, "n_routed_experts": 256, "num_experts_per_tok": 8, "n_group": 8,
                 "topk_group": 4, "first_k_dense_replace": 1, "q_lora_rank": 1536, "kv_lora_rank": 512,
                 "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
                 "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000}""", "v3");
        assertEquals(2L * 128 * 192 + 2L * 128 * 128 + 512 + 64, MemoryPlan.attentionProjections(v3));
        assertEquals(2L * 32 * 128 + 2L * 8 * 128, MemoryPlan.attentionProjections(MIXTRAL_1));
    }

    @Test
    void trainKeepsEveryLayerAndOneBlockOfLogits() {
        // per token: 2.5 × (stream + experts) + 3 × (per-head q, k, v, out and lse), whatever the window; the logits
        // of one block of rows, their gradient in their place: all 256 rows here; of 2048, 524 (2^24 / 32000)
        long perToken = (5 * (26624 + 102416)) / 2 + 3 * (10240 + 64);
        assertEquals((256L * perToken + 256L * 32000) * 4,
                MemoryPlan.activations(MemoryPlan.Job.TRAIN, MIXTRAL_1, 256, false));
        assertEquals((2048L * perToken + 524L * 32000) * 4,
                MemoryPlan.activations(MemoryPlan.Job.TRAIN, MIXTRAL_1, 2048, false));
        // calibrate: one layer's forward (stream, attention, experts), whose routed rows the statistics read, no
        // logits, plus --all-experts' one expert over every token (h1, h3 and h: 3I)
        assertEquals(256L * ((26624 + 10304 + 102416) + 3 * 14336) * 4,
                MemoryPlan.activations(MemoryPlan.Job.CALIBRATE, MIXTRAL_1, 256, false));
    }

    /**
     * Mixtral-8x7B's 32 layers with --checkpoint-activations: one layer's kept floats plus every layer's input (4096)
     * and router logits (8) per token, instead of 32 layers' kept floats; the block of logits stays.
     */
    @Test
    void checkpointedTrainKeepsOneLayerAndEveryLayersInput() {
        ModelConfig mixtral = ModelConfig.parse(MIXTRAL_JSON.replace("\"num_hidden_layers\": 1",
                "\"num_hidden_layers\": 32"), "mixtral-32");
        long layer = (5 * (26624 + 102416)) / 2 + 3 * (10240 + 64);
        long logits = 256L * 32000;
        assertEquals((256L * 32 * layer + logits) * 4, MemoryPlan.activations(MemoryPlan.Job.TRAIN, mixtral, 256,
                false));
        assertEquals((256L * (layer + 32 * (4096 + 8)) + logits) * 4,
                MemoryPlan.activations(MemoryPlan.Job.TRAIN, mixtral, 256, true));
        SparkLimits limits = SparkLimits.of(new SparkConf(false).setMaster("local[2]"), null);
        String kept = MemoryPlan.of(MemoryPlan.Job.TRAIN, mixtral, 1L << 30, 1, 256, 1L << 20, false, limits)
                .describe();
        String recomputed = MemoryPlan.of(MemoryPlan.Job.TRAIN, mixtral, 1L << 30, 1, 256, 1L << 20, true, limits)
                .describe();
        assertTrue(kept.contains("memory plan: activations of every layer kept for the backward"), kept);
        assertTrue(recomputed.contains("memory plan: activations checkpointed (--checkpoint-activations)"), recomputed);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryPlan.of(
                MemoryPlan.Job.EVAL, mixtral, 1L << 30, 1, 256, 0, true, limits));
        assertEquals("activations are checkpointed by train only, not EVAL", e.getMessage());
    }

    /**
     * A train step reuses its thread's pass workspace only when every layer's activations are kept and come to at most
     * {@link MemoryPlan#PASS_WORKSPACE_MAX} per slot: the bundled tiny Mixtral's 8 windows of 256 tokens do, the
     * Mixtral-8x7B shape's one window does not, nor a checkpointed run or another job.
     */
    @Test
    void onlySmallTrainStepsKeepingEveryLayerReuseAPassWorkspace() {
        ModelConfig tiny = ModelConfig.parse("""
                {"model_type": "mixtral", "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
                 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 512,
                 "rms_norm_eps": 1e-5, "rope_theta": 1e4}""", "mixtral-tiny");
        SparkLimits limits = SparkLimits.of(new SparkConf(false).setMaster("local[2]"), null);
        MemoryPlan small = MemoryPlan.of(MemoryPlan.Job.TRAIN, tiny, 14L << 20, 8, 256, 7L << 20, false, limits);
        assertTrue(small.activationBytes() <= MemoryPlan.PASS_WORKSPACE_MAX, small.describe());
        assertTrue(small.passWorkspace());
        assertTrue(small.describe().contains("so each task thread reuses them from step to step"), small.describe());
        assertFalse(MemoryPlan.of(MemoryPlan.Job.TRAIN, tiny, 14L << 20, 8, 256, 7L << 20, true, limits)
                .passWorkspace());
        assertFalse(MemoryPlan.of(MemoryPlan.Job.EVAL, tiny, 14L << 20, 8, 256, 0, false, limits).passWorkspace());
        MemoryPlan large = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 1L << 30, 1, 256, 1L << 20, false, limits);
        assertTrue(large.activationBytes() > MemoryPlan.PASS_WORKSPACE_MAX, large.describe());
        assertFalse(large.passWorkspace());
        assertFalse(large.describe().contains("reuses them"), large.describe());
    }

    /**
     * A μMoE adapter on Mixtral-8x7B's 32 layers (D 4096, 32 heads of 128, 8 KV heads): per token and site its
     * forward's saved gates and rank-space rows (CP: N + 3R; with levels ΣN_l + (L + 2)·R; TR with levels the gates,
     * P_l per level, the chain Q_l after the first level, Pi and M) twice (forward and backward), plus O and I; kept for every layer, or the largest layer's when checkpointed; refused for the other
     * jobs.
     */
    @Test
    void aMumoeAdapterAddsItsActivationsPerSiteAndLayer() {
        ModelConfig mixtral = ModelConfig.parse(MIXTRAL_JSON.replace("\"num_hidden_layers\": 1",
                "\"num_hidden_layers\": 32"), "mixtral-32");
        SparkLimits limits = SparkLimits.of(new SparkConf(false).setMaster("local[2]"), null);
        MumoeConfig cp = new MumoeConfig(MumoeForm.CP, 64, new int[] {8}, MumoeConfig.parseTargets("k_proj,moe", "t"));
        long k = 2 * (64 + 3 * 8) + 1024 + 4096;       // D → KVH·hd = 1024
        long moe = 2 * (64 + 3 * 8) + 4096 + 4096;     // D → D
        assertEquals(32 * (k + moe), MemoryPlan.mumoeFloats(mixtral, cp, false));
        assertEquals(k + moe, MemoryPlan.mumoeFloats(mixtral, cp, true));
        MumoeConfig levels = new MumoeConfig(MumoeForm.CP, new int[] {64, 64}, new int[] {8},
                MumoeConfig.parseTargets("moe", "t"));
        assertEquals(2 * (64 + 64 + 4 * 8) + 4096 + 4096, MemoryPlan.mumoeFloats(mixtral, levels, true));
        MumoeConfig ring = new MumoeConfig(MumoeForm.TR, new int[] {64, 64}, new int[] {8, 8, 8, 8},
                MumoeConfig.parseTargets("moe", "t"));
        // gates 64 + 64; P_1, P_2, Q_2, Pi and M of 8·8 each
        assertEquals(2 * (64 + 64 + 5 * 8 * 8) + 4096 + 4096, MemoryPlan.mumoeFloats(mixtral, ring, true));
        long without = MemoryPlan.of(MemoryPlan.Job.TRAIN, mixtral, 1L << 30, 2, 256, 1L << 20, false, limits)
                .activationBytes();
        long with = MemoryPlan.of(MemoryPlan.Job.TRAIN, mixtral, 1L << 30, 2, 256, 1L << 20, false, cp, limits)
                .activationBytes();
        assertEquals(512L * 32 * (k + moe) * 4, with - without);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryPlan.of(
                MemoryPlan.Job.EVAL, mixtral, 1L << 30, 1, 256, 0, false, cp, limits));
        assertEquals("a μMoE adapter's activations are planned for train only, not EVAL", e.getMessage());
    }

    @Test
    void yarnOverheadDefaultsToTenPercentOfTheExecutorMemoryAtLeast384m() {
        SparkLimits limits = yarn(null, 2);
        assertEquals(2, limits.slotsPerExecutor());
        assertEquals(4L << 30, limits.heapBytes());
        assertEquals(Math.max(384L << 20, (long) (0.1 * (4L << 30))), limits.nativeBudgetBytes());
        assertTrue(limits.containerised());
        assertEquals(1L << 30, limits.maxResultBytes());
        assertEquals(6L << 30, yarn("6g", 1).nativeBudgetBytes());
    }

    @Test
    void embeddedSlotsComeFromTheMasterAndTheBudgetFromThisMachine() {
        SparkLimits limits = SparkLimits.of(new SparkConf(false).setMaster("local[3]"), null);
        assertEquals(3, limits.slotsPerExecutor());
        assertEquals(3, limits.partitions(), "local mode's default parallelism is its slots");
        assertEquals(Runtime.getRuntime().maxMemory(), limits.heapBytes());
        assertTrue(limits.nativeBudgetBytes() > 0);
        SparkLimits cluster = SparkLimits.of(new SparkConf(false).setMaster("local-cluster[2,1,1024]"), 4);
        assertEquals(1, cluster.slotsPerExecutor());
        assertEquals(1L << 30, cluster.heapBytes());
        assertEquals(0, cluster.nativeBudgetBytes(), "a standalone worker's memory is not checked");
    }

    /**
     * Surgery on Mixtral-8x7B's shape: per task slot one part's new tensors in float32 and the scratch of the stacks
     * that read the experts as stored (20 MiB each: a float32 and two float64 blocks of 2^20 elements), never a
     * projection's E experts widened (8 × 14336 × 4096 float32 = 1.75 GiB each).
     */
    @Test
    void aSurgeryPlansOnePartsNewTensorsAndScratchPerSlot() {
        long scratch = 20L << 20;
        assertEquals(scratch, ExpertStack.scratchBytes());
        long expert = 4096L * 14336;                                                    // one projection's elements
        double[][] uniform = {MergeWeights.uniform(8)};
        LayerSurgery merge = new DenseMergeSurgery(MIXTRAL_1, uniform);
        assertEquals(4 * expert + scratch, merge.partBytes(MIXTRAL_1));                // merged [I, D], not padded
        LayerSurgery reduce = new ExpertReduceSurgery(MIXTRAL_1, 1, 4, ExpertReduceSurgery.By.WEIGHTS, null, 1);
        assertEquals(12, reduce.parts(), "one new 224 MiB projection a part, the k-means in a task of its own");
        assertEquals(4 * (expert + 2 * 8 * 4098) + 3 * scratch, reduce.partBytes(MIXTRAL_1));
        LayerSurgery lowRank = new LowRankSurgery(MIXTRAL_1, 16, uniform);
        long svd = 8 * (expert + 4096 + 3 * 16 * 14336 + 4096L * (3 * 4096 + 6) + 64 * (4096 + 14336)) + 4 * 12 * 4096;
        assertEquals(svd, TruncatedSvd.bytes(14336, 4096, 16));                      // thin: no U [14336, 14336]
        assertEquals(8 * (5 * expert) + svd + 4 * (2 * expert + 8 * 16 * (4096 + 14336)) + scratch,
                lowRank.partBytes(MIXTRAL_1));
        assertTrue(merge.partBytes(MIXTRAL_1) < 8 * 4 * expert / 3, "a third of one whole float32 stack");

        MemoryPlan plan = MemoryPlan.surgery(3_430_000_000L, merge.partBytes(MIXTRAL_1), yarn(null, 2));
        assertEquals(2 * merge.partBytes(MIXTRAL_1), plan.nativeBytes());
        assertTrue(plan.describe().contains("memory plan: native 488 MiB = 2 × (one part's new tensors and scratch "
                + "244 MiB; the experts are read as stored, a block of rows at a time)"), plan.describe());
        String message = assertThrows(IllegalArgumentException.class, plan::check).getMessage();
        assertTrue(message.startsWith("memory plan: an executor needs 744 MiB beside its heap (2 task slots × 244 MiB "
                + "for one part's new tensors and scratch), over spark.executor.memoryOverhead 410 MiB"), message);
        assertTrue(message.endsWith("raise spark.executor.memoryOverhead to at least 745m, or lower "
                + "spark.executor.cores"), message);
        MemoryPlan.surgery(3_430_000_000L, merge.partBytes(MIXTRAL_1), yarn("2g", 2)).check();
    }

    /**
     * A distillation task holds X, its copy and Y [T, D], and the MoE activations of a teacher block and, three times
     * over (forward and backward), of a step's batch; a CP or TR form adds its rank-space activations per token there
     * (tiny Mixtral: D 128, I 256, K 2; rank 8): CP z1, z3 per token and p1, p3, z2, p2 per row, 2R + 4KR = 80 floats;
     * TR (8, 8, 8) z1, z3 [r2·r3] per token, a1, a3, a2 [r1·r3] and z2 per row and one contraction's G_N slices and
     * input rows, 2R² + K·6R² = 896.
     */
    @Test
    void aDistillationCountsItsFormsFactorActivations() throws Exception {
        Path folder = Path.of("..", "examples", "models", "mixtral-tiny").toAbsolutePath();
        String tinyUri = folder.toUri().toString();
        ModelConfig tiny = ModelConfig.parse(Files.readString(folder.resolve("config.json")), "mixtral-tiny");
        assertEquals(80, CpExperts.factorFloatsPerToken(2, 8));
        assertEquals(896, TrExperts.factorFloatsPerToken(2, 8, 8, 8));
        long tokens = 4096;
        int batch = 512;
        MemoryPlan surgery = MemoryPlan.surgery(7_000_000L, 1L << 20, yarn("2g", 2));
        Configuration conf = new Configuration();
        long svd = surgery.distilling(tinyUri, conf, tiny, 1, 128, tokens, batch, 0).perSlotBytes();
        long moe = 2 * (2 * 128 + 3 * 256) + 2 * 8;                                  // floats per token
        long blocks = Math.min(tokens, LowRankDistillation.EVAL_CHUNK) + 3L * batch;  // tokens whose MoE pass is held
        assertEquals(4 * (3 * tokens * 128 + blocks * moe), svd, "X, its copy, Y and the MoE activations");
        for (long form : new long[] {80, 896}) {
            assertEquals(4 * blocks * form,
                    surgery.distilling(tinyUri, conf, tiny, 1, 128, tokens, batch, form).perSlotBytes() - svd);
        }
    }

    @Test
    void aPlanOverTheContainerOverheadIsRefusedNamingTheFlags() {
        MemoryPlan plan = MemoryPlan.of(MemoryPlan.Job.EVAL, MIXTRAL_1, 3_430_000_000L, 8, 256, 0, yarn(null, 2));
        String message = assertThrows(IllegalArgumentException.class, plan::check).getMessage();
        assertTrue(message.startsWith("memory plan: an executor needs "), message);
        assertTrue(message.contains("lower --batch-windows or --window, or raise spark.executor.memoryOverhead to at "
                + "least "), message);
        assertTrue(message.contains("spark.executor.memoryOverhead 410 MiB"), message);
        long need = plan.nativeBytes() + MemoryPlan.JVM_OVERHEAD;
        assertEquals(need, plan.widenedBytes() + 2 * (WeightStack.SCRATCH_BYTES_PER_THREAD + plan.activationBytes())
                + MemoryPlan.JVM_OVERHEAD);
        // the overhead the message asks for is enough
        MemoryPlan raised = MemoryPlan.of(MemoryPlan.Job.EVAL, MIXTRAL_1, 3_430_000_000L, 8, 256, 0,
                yarn(((need >> 20) + 1) + "m", 2));
        raised.check();
    }

    @Test
    void trainCountsTheStateCopyAndGradientsOffTheHeapAndThePartialAndKeptMeanOnIt() {
        long mib = 1L << 20;
        long state = 300 * mib; // 300 MiB of parameters and moments
        SparkConf conf = new SparkConf(false).setMaster("yarn").set("spark.executor.memoryOverhead", "64g");
        // the averaged state never travels as a task result: a tiny maxResultSize is not refused
        MemoryPlan tiny = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, state,
                SparkLimits.of(conf.clone().set("spark.driver.maxResultSize", "10m"), 3));
        tiny.check();
        // native per slot: the state copy and its gradients (a third); nothing JVM-wide for the state
        assertEquals(WeightStack.SCRATCH_BYTES_PER_THREAD + tiny.activationBytes() + state + state / 3,
                tiny.perSlotBytes());
        assertEquals(tiny.widenedBytes() + tiny.slots() * tiny.perSlotBytes(), tiny.nativeBytes());
        // heap, 1 slot and 3 partitions: 384 + (16.1 + 300) + (3 + 1) × 64 + 300 kept = 1256.1, rounded to 1280 (the
        // step's arrays at 256 tokens: the loss's 16 MiB block and 408 bytes per token, trainHeapBytes)
        assertEquals(1280 * mib, MemoryPlan.heap(MemoryPlan.Job.TRAIN, MIXTRAL_1, 256, state, state, 1, 3, false));
    }

    @Test
    void describeNamesEveryPart() {
        String text = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, 84_934_656L,
                yarn("8g", 1)).describe();
        assertTrue(text.contains("memory plan: train per executor JVM of yarn, heap 4.00 GiB, 1 task slot\n"), text);
        assertTrue(text.contains("mapped weights 3.19 GiB (file-backed"), text);
        assertTrue(text.contains("per round: the last mean 81.0 MiB kept on the executors in blocks of at most "
                + "64.0 MiB (a task reads it from its own executor, or fetches it once from the one that made it); "
                + "partials 2 × 81.0 MiB averaged through the shuffle; the driver reads the mean only for a "
                + "checkpoint and the last round"), text);
        text.lines().forEach(line -> assertTrue(line.startsWith("memory plan: "), line));
    }

    /**
     * Where a round's mean forms: partials that fit in spark.sparkmoe.train.driverAveraging (default 64 MiB) are
     * averaged on the driver; more go through the shuffle, the driver taking the tree's first level whose nodes fit.
     */
    @Test
    void describeSaysWhereTheRoundsMeanForms() {
        long mib = 1L << 20;
        String small = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, 7 * mib,
                yarn("8g", 1)).describe();
        assertTrue(small.contains("per round: partials 2 × 7.00 MiB kept by the executors and averaged on the driver "
                + "(up to 64.0 MiB: spark.sparkmoe.train.driverAveraging), which keeps the mean 7.00 MiB for the next "
                + "round's tasks to fetch once per executor"), small);
        SparkConf eight = new SparkConf(false).setMaster("yarn").set("spark.executor.memory", "8g");
        String mixed = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, 20 * mib,
                SparkLimits.of(eight, 8)).describe();
        assertTrue(mixed.contains("per round: partials 8 × 20.0 MiB kept by the executors, averaged through the "
                + "shuffle to span 4, and averaged on the driver (up to 64.0 MiB: spark.sparkmoe.train.driverAveraging),"
                + " which keeps the mean 20.0 MiB"), mixed);
        String raised = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, 20 * mib,
                SparkLimits.of(eight.clone().set(SparkLimits.DRIVER_AVERAGING_KEY, "160m"), 8)).describe();
        assertTrue(raised.contains("partials 8 × 20.0 MiB kept by the executors and averaged on the driver (up to "
                + "160 MiB"), raised);
        String off = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, 7 * mib,
                SparkLimits.of(eight.clone().set(SparkLimits.DRIVER_AVERAGING_KEY, "0"), 2)).describe();
        assertTrue(off.contains("partials 2 × 7.00 MiB averaged through the shuffle; the driver reads"), off);
        // gradient averaging: partials of gradients, a third of the state's bytes; 8 × 81 MiB of state would go
        // through the shuffle, 8 × 27 MiB of gradients reach the driver from span 4 (2 nodes of 27 MiB)
        String gradients = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, 81 * mib,
                27 * mib, false, null, SparkLimits.of(eight, 8)).describe();
        assertTrue(gradients.contains("per round: partials 8 × 27.0 MiB of gradients kept by the executors, averaged "
                + "through the shuffle to span 4, and averaged on the driver (up to 64.0 MiB: "
                + "spark.sparkmoe.train.driverAveraging), which keeps the mean 81.0 MiB"), gradients);
        assertEquals(MemoryPlan.heap(MemoryPlan.Job.TRAIN, MIXTRAL_1, 256, 81 * mib, 27 * mib, 1, 8, false),
                MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 3_430_000_000L, 1, 256, 81 * mib, 27 * mib, false,
                        null, SparkLimits.of(eight, 8)).heapNeededBytes());
        assertTrue(MemoryPlan.heap(MemoryPlan.Job.TRAIN, MIXTRAL_1, 256, 81 * mib, 27 * mib, 1, 8, false)
                < MemoryPlan.heap(MemoryPlan.Job.TRAIN, MIXTRAL_1, 256, 81 * mib, 81 * mib, 1, 8, false));
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> SparkLimits.of(eight.clone().set(SparkLimits.DRIVER_AVERAGING_KEY, "lots"), 2));
        assertEquals("spark.sparkmoe.train.driverAveraging=lots in the Spark configuration is not a size such as "
                + "64m or 0", bad.getMessage());
    }

    /**
     * The heap the launcher passes as -Xmx: 384 MiB base, plus per slot what a task holds on the heap (eval: the
     * forward's Java arrays and a row of logits, the block staying in native memory; calibrate: one block of
     * logits as floats; train: the loss's 2^21 doubles and the float32 partial of the state), plus for train the
     * averaging tree's reduce (one chunk per partition and their mean) and the kept mean, in whole 64 MiB.
     */
    @Test
    void theHeapCountsEachSlotsJavaArraysAndTheAveragingChunks() {
        long mib = 1L << 20;
        // eval, 8 windows of 256 at vocabulary 32000: the router's float64 logits 2048 × 8 and a row of 32000
        // floats and 32000 doubles, 515,072 bytes per slot; 2 slots: 385 MiB, under Spark's floor, so 512 (at
        // -Xmx448m Spark refuses to start: "System memory 469762048 must be at least 471859200")
        assertEquals(512 * mib, MemoryPlan.heap(MemoryPlan.Job.EVAL, MIXTRAL_1, 2048, 0, 0, 2, 2, false));
        assertEquals(512 * mib, MemoryPlan.heap(MemoryPlan.Job.EVAL, MIXTRAL_1, 256, 0, 0, 2, 2, false));
        // 500 slots: 384 + 500 × 0.491 = 629.6 MiB, rounded to 640
        assertEquals(640 * mib, MemoryPlan.heap(MemoryPlan.Job.EVAL, MIXTRAL_1, 2048, 0, 0, 500, 500, false));
        // a shared expert (the Qwen1.5-MoE shape: D 2048, 60 experts, vocabulary 151936), 8 windows of 2048: its
        // float64 output and the block's float64 sum, 2 × 16384 × 2048 × 8 = 512 MiB, the router's 7.5 MiB and
        // the row's 1.74 MiB per slot; 2 slots: 1426.5 MiB, rounded to 1472
        assertEquals(1472 * mib, MemoryPlan.heap(MemoryPlan.Job.EVAL, synth(ModelShape.QWEN1_5_MOE_A2_7B, 2),
                16384, 0, 0, 2, 2, false));
        // calibrate: a block of an expert's inputs and intermediates read as floats, 2 × 65,536 floats (512 KiB) per
        // slot whatever the tokens: 384 + 2 × 0.5 = 385, rounded to 448, below the floor of 512
        assertEquals(512 * mib, MemoryPlan.heap(MemoryPlan.Job.CALIBRATE, MIXTRAL_1, 2048, 0, 0, 2, 2, false));
        assertEquals(512 * mib, MemoryPlan.heap(MemoryPlan.Job.CALIBRATE, MIXTRAL_1, 16 * 2048, 0, 0, 2, 2, false));
        // train, state of 100 MiB, 2 slots and 2 partitions: 384 + 2 × (16.1 + 100) + 3 × 64 + 100 kept = 908.2,
        // rounded to 960
        assertEquals(960 * mib,
                MemoryPlan.heap(MemoryPlan.Job.TRAIN, MIXTRAL_1, 256, 100 * mib, 100 * mib, 2, 2, false));
        String text = MemoryPlan.of(MemoryPlan.Job.TRAIN, MIXTRAL_1, 1000, 1, 256, 100 * mib,
                SparkLimits.of(new SparkConf(false).setMaster("local[2]"), 2)).describe();
        assertTrue(text.contains("memory plan: heap needed 960 MiB (-Xmx960m; "), text);
    }

    /**
     * A train step's Java arrays at 8 windows of 2048 (T = 16384), whole depth. Qwen1.5-MoE-A2.7B (24 layers, 16
     * heads, 60 experts, K 4, D 2048, a shared expert): each layer keeps 2 × 8 (RMSNorm) + 16 × 8 (log-sum-exp)
     * + 60 × 8 (router) + 24 × 4 (routes and plan) + 8 (shared gates) = 728 bytes per token, 17,472 over 24 layers,
     * plus the expert-weight gradients 24 × 4 × 8 = 768 and the final norm's 8: 18,248 × T = 285.1 MiB; the largest
     * scratch is a layer's backward, 60 × 8 + 4 × 8 + 4 + 3 × 2048 × 8 + 8 = 49,676 × T = 776.2 MiB (the shared
     * expert's three float64 [T, D]). Checkpointed, two layers' 2 × 728 instead of 17,472. Qwen3-30B-A3B (48 layers, 32
     * heads over 4 KV heads, per-head q/k norms, 128 experts, K 8): 2 × 8 + 32 × 8 + 36 × 8 + 128 × 8 + 24 × 8 =
     * 1,776 per layer and token, 85,248 over 48, + 48 × 64 + 8 = 88,328 × T = 1380.1 MiB, and the larger of the
     * loss's 16 MiB block and 1,092 × T (17.1 MiB). The plan counted 16 MiB for all of it before.
     */
    @Test
    void aTrainStepsJavaArraysAreCountedPerLayer() {
        long t = 16384;
        ModelConfig qwen15 = synth(ModelShape.QWEN1_5_MOE_A2_7B, 24);
        assertEquals(18_248 * t + 49_676 * t, MemoryPlan.trainHeapBytes(qwen15, t, false));
        assertEquals((2 * 728 + 768 + 8) * t + 49_676 * t, MemoryPlan.trainHeapBytes(qwen15, t, true));
        ModelConfig qwen3 = synth(ModelShape.QWEN3_30B_A3B, 48);
        assertEquals(88_328 * t + 1_092 * t, MemoryPlan.trainHeapBytes(qwen3, t, false));
        assertEquals((2 * 1_776 + 3_072 + 8) * t + 1_092 * t, MemoryPlan.trainHeapBytes(qwen3, t, true));
        // at 256 tokens the loss's block is the larger
        assertEquals(256 * (88_328) + CausalLmLoss.BLOCK_ELEMENTS * Double.BYTES,
                MemoryPlan.trainHeapBytes(qwen3, 256, false));
        // the launcher's heap for one slot of Qwen1.5 at 8 × 2048 with a 64 MiB state: 384 + 1061.3 + 64 + 2 × 64
        // + 64 = 1701.3 MiB, rounded to 1728
        long mib = 1L << 20;
        assertEquals(1728 * mib, MemoryPlan.heap(MemoryPlan.Job.TRAIN, qwen15, t, 64 * mib, 64 * mib, 1, 1, false));
    }

    /** A synth shape's config with {@code layers} layers in bf16. */
    private static ModelConfig synth(ModelShape shape, int layers) {
        return ModelConfig.parse(shape.config(layers, DType.BF16).toString(), shape.shapeName());
    }

    /** Tensor name → bytes of a bf16 checkpoint of {@code c} (the names and shapes it stores). */
    private static Map<String, Long> bf16Bytes(ModelConfig c) {
        Map<String, Long> out = new LinkedHashMap<>();
        ModelSchema.expectedStored(c).forEach((name, shape) -> out.put(name,
                2 * Arrays.stream(shape).reduce(1, Math::multiplyExact)));
        return out;
    }

    /** The bytes of the tensors whose names start with {@code prefix}. */
    private static long bytesUnder(Map<String, Long> bytes, String prefix) {
        return bytes.entrySet().stream().filter(e -> e.getKey().startsWith(prefix)).mapToLong(Map.Entry::getValue)
                .sum();
    }

    /** A YARN executor of {@code cores} cores and a 1 GiB heap that has {@code memory} bytes in all. */
    private static SparkLimits executorOf(long memory, int cores) {
        return SparkLimits.of(new SparkConf(false).setMaster("yarn").set("spark.executor.memory", "1g")
                .set("spark.executor.cores", String.valueOf(cores))
                .set(SparkLimits.MEMORY_KEY, String.valueOf(memory)), 2);
    }

    /**
     * The memory plan chooses the pass on Mixtral-8x7B's shape with 4 layers in bf16: per layer the experts are
     * 8 × 3 × 14336 × 4096 × 2 B = 2.63 GiB beside 80.0 MiB of attention, router and norms, the embedding and LM
     * head 2 × 32000 × 4096 × 2 B = 500 MiB with the final norm. The whole model fits an executor with its mapped weights beside its
     * anonymous memory; a byte less and the pass runs with one layer's weights; less than that, with the fewest
     * expert groups whose share (one task slot: one group at a time) fits, down to the ends' 500 MiB; under that,
     * nothing fits.
     */
    @Test
    void thePlanChoosesTheLayerwisePassAndTheFewestExpertGroupsThatFit() {
        ModelConfig c = synth(ModelShape.MIXTRAL_8X7B, 4);
        Map<String, Long> bytes = bf16Bytes(c);
        long model = bytes.values().stream().mapToLong(Long::longValue).sum();
        long experts = 8L * 3 * 14336 * 4096 * 2;
        long layer = bytesUnder(bytes, "model.layers.0.");
        assertEquals(experts, bytesUnder(bytes, "model.layers.0.block_sparse_moe.experts."));
        long other = layer - experts;
        // q and o [4096, 4096], k and v [1024, 4096], two norms [4096], the router [8, 4096]
        assertEquals((2L * 4096 * 4096 + 2L * 1024 * 4096) * 2 + 2 * 4096 * 2 + 8 * 4096 * 2, other);
        long ends = 2L * 32000 * 4096 * 2 + 4096 * 2;                           // with the final norm
        assertEquals(ends, model - bytesUnder(bytes, "model.layers."));
        long anonymous = MemoryPlan.of(MemoryPlan.Job.EVAL, c, model, 1, 256, 0, executorOf(1L << 40, 1))
                .anonymousBytes();

        assertTrue(plan(c, model, anonymous + model, 1).fits());
        MemoryPlan whole = plan(c, model, anonymous + model - 1, 1);
        assertFalse(whole.fits());
        assertEquals(model, whole.totalBytes() - anonymous);
        MemoryPlan oneLayer = whole.smallestLayerwise(c, bytes, 1, 256);
        assertEquals(1, oneLayer.layerwise().expertGroups());
        assertEquals(layer, oneLayer.mappedBytes());

        MemoryPlan halves = plan(c, model, anonymous + other + experts / 2, 1).smallestLayerwise(c, bytes, 1, 256);
        assertEquals(2, halves.layerwise().expertGroups());
        assertEquals(other + experts / 2, halves.mappedBytes());
        assertTrue(halves.describe().contains("the largest piece, layer 0 with 1 of its 2 expert groups (4 experts "
                + "each) at once, of "), halves.describe());
        assertEquals(4, plan(c, model, anonymous + other + experts / 2 - 1, 1).smallestLayerwise(c, bytes, 1, 256)
                .layerwise().expertGroups(), "a byte less than G 2 needs");

        MemoryPlan eighths = plan(c, model, anonymous + ends, 1).smallestLayerwise(c, bytes, 1, 256);
        assertEquals(8, eighths.layerwise().expertGroups(), "G 4 maps " + (other + experts / 4) + " > " + ends);
        assertEquals(ends, eighths.mappedBytes());
        assertEquals("embedding and LM head", eighths.layerwise().largestName());
        assertNull(plan(c, model, anonymous + ends - 1, 1).smallestLayerwise(c, bytes, 1, 256));
    }

    /**
     * With 2 task slots an executor may run two groups of a layer at once: G = 2 maps the whole layer, so the half of
     * the experts that fit take G = 4 (two groups of 2 experts at once).
     */
    @Test
    void expertGroupsCountTheGroupsAnExecutorsSlotsRunAtOnce() {
        ModelConfig c = synth(ModelShape.MIXTRAL_8X7B, 4);
        Map<String, Long> bytes = bf16Bytes(c);
        long model = bytes.values().stream().mapToLong(Long::longValue).sum();
        long experts = 8L * 3 * 14336 * 4096 * 2;
        long other = bytesUnder(bytes, "model.layers.0.") - experts;
        long anonymous = MemoryPlan.of(MemoryPlan.Job.EVAL, c, model, 1, 256, 0, executorOf(1L << 40, 2))
                .anonymousBytes();
        MemoryPlan quarters = plan(c, model, anonymous + other + experts / 2, 2).smallestLayerwise(c, bytes, 1, 256);
        assertEquals(4, quarters.layerwise().expertGroups());
        assertEquals(other + experts / 2, quarters.mappedBytes());
        assertTrue(quarters.describe().contains("layer 0 with 2 of its 4 expert groups (2 experts each) at once"),
                quarters.describe());
        // --expert-groups 2 on 2 slots: both groups at once, the whole layer
        assertEquals(other + experts, plan(c, model, 1L << 40, 2).layerwise(c, bytes, 1, 256, 2).mappedBytes());
    }

    /**
     * DeepSeek-V3's shape with 4 layers (3 dense, one MoE layer of 256 experts of 3 × 2048 × 7168 × 2 B = 84 MiB) on
     * an executor of 8 task slots: up to G = 8 its slots may run every group at once, so the layer's 21 GiB of experts
     * fit 8 GiB only from G = 32 (8 groups of 8 experts at once, 5.25 GiB beside the layer's attention).
     */
    @Test
    void deepseekV3sManyExpertsGoInTheGroupsItsSlotsCanHold() {
        ModelConfig c = synth(ModelShape.DEEPSEEK_V3, 4);
        Map<String, Long> bytes = bf16Bytes(c);
        long model = bytes.values().stream().mapToLong(Long::longValue).sum();
        long expert = 3L * 2048 * 7168 * 2;
        assertEquals(256 * expert, bytesUnder(bytes, "model.layers.3.mlp.experts."));
        long other = bytesUnder(bytes, "model.layers.3.") - 256 * expert;
        long anonymous = MemoryPlan.of(MemoryPlan.Job.CALIBRATE, c, model, 1, 256, 0, executorOf(1L << 40, 8))
                .anonymousBytes();
        MemoryPlan whole = MemoryPlan.of(MemoryPlan.Job.CALIBRATE, c, model, 1, 256, 0,
                executorOf(anonymous + (8L << 30), 8));
        assertFalse(whole.fits());
        MemoryPlan chosen = whole.smallestLayerwise(c, bytes, 1, 256);
        assertEquals(32, chosen.layerwise().expertGroups());
        assertEquals(other + 64 * expert, chosen.mappedBytes());
        assertTrue(chosen.fits());
        // the pass's heap: 512 MiB (the floor; 384 + 8 slots × 0.5 MiB of a block of an expert's rows) + 8 slots × 4
        // copies of a 7 MiB chunk + 256 MiB of stored chunks = 992, rounded to 1024
        assertEquals(1024L << 20, chosen.heapNeededBytes(), MemoryPlan.size(chosen.heapNeededBytes()));
        assertEquals(chosen.mappedBytes() + chosen.nativeBytes() + MemoryPlan.JVM_OVERHEAD + chosen.heapNeededBytes(),
                chosen.totalBytes());
    }

    /**
     * Mistral-7B's dense shape has no experts to group: its largest piece fits or nothing does (the embedding and LM
     * head, 500 MiB, over a layer's 416 MiB).
     */
    @Test
    void aDenseModelTriesOneLayerOnly() {
        ModelConfig c = synth(ModelShape.MISTRAL_7B, 2);
        Map<String, Long> bytes = bf16Bytes(c);
        long model = bytes.values().stream().mapToLong(Long::longValue).sum();
        long ends = model - bytesUnder(bytes, "model.layers.");
        assertTrue(ends > bytesUnder(bytes, "model.layers.1."));
        long anonymous = MemoryPlan.of(MemoryPlan.Job.EVAL, c, model, 1, 256, 0, executorOf(1L << 40, 1))
                .anonymousBytes();
        MemoryPlan fits = plan(c, model, anonymous + ends, 1).smallestLayerwise(c, bytes, 1, 256);
        assertEquals(1, fits.layerwise().expertGroups());
        assertEquals(ends, fits.mappedBytes());
        assertNull(plan(c, model, anonymous + ends - 1, 1).smallestLayerwise(c, bytes, 1, 256));
    }

    @Test
    void theDeclaredExecutorMemoryIsItsMemoryOnAnyMasterAndMustBeASize() {
        SparkConf local = new SparkConf(false).setMaster("local[2]").set(SparkLimits.MEMORY_KEY, "8g");
        SparkLimits embedded = SparkLimits.of(local, null);
        assertEquals(8L << 30, embedded.memoryBytes());
        assertEquals((8L << 30) - embedded.heapBytes() - MemoryPlan.JVM_OVERHEAD, embedded.nativeBudgetBytes());
        assertTrue(embedded.nativeBudgetSource().startsWith(SparkLimits.MEMORY_KEY + " 8.00 GiB"),
                embedded.nativeBudgetSource());
        SparkLimits standalone = SparkLimits.of(new SparkConf(false).setMaster("spark://h:7077")
                .set(SparkLimits.MEMORY_KEY, "8g"), null);
        assertEquals(8L << 30, standalone.memoryBytes());
        assertEquals(0, SparkLimits.of(new SparkConf(false).setMaster("spark://h:7077"), null).memoryBytes(),
                "a standalone executor's memory is not known unless declared");
        assertEquals((4L << 30) + Math.max(384L << 20, (long) (0.1 * (4L << 30))), yarn(null, 2).memoryBytes(),
                "a container: spark.executor.memory + memoryOverhead");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SparkLimits.of(
                local.clone().set(SparkLimits.MEMORY_KEY, "lots"), null));
        assertEquals(SparkLimits.MEMORY_KEY + "=lots in the Spark configuration is not a size such as 64g or 512m",
                e.getMessage());
    }

    /** An eval plan of {@code c} (mapped {@code model} bytes, one window of 256) on an executor of {@code memory}. */
    private static MemoryPlan plan(ModelConfig c, long model, long memory, int cores) {
        return MemoryPlan.of(MemoryPlan.Job.EVAL, c, model, 1, 256, 0, executorOf(memory, cores));
    }
}
