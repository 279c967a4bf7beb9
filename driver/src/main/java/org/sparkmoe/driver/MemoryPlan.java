package org.sparkmoe.driver;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.calib.ExpertActivationStats;
import org.sparkmoe.driver.train.RoundTree;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.Perplexity;
import org.sparkmoe.surgery.LowRankDistillation;
import org.sparkmoe.train.CausalLmLoss;
import org.sparkmoe.train.StateMean;
import org.sparkmoe.kernels.WeightStack;

import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * What one executor JVM needs for a job, worked out on the driver from config.json, the checkpoint's size and the
 * job's flags before Spark starts: printed at the start of eval, calibrate, train and surgery, refused in one line
 * when it cannot fit ({@link #check}), printed alone with {@code --dry-run}.
 *
 * <p>Parts, per executor JVM:
 * <ul>
 *   <li><b>mapped</b>: the checkpoint's tensor bytes, memory-mapped in their stored dtype. File-backed page cache,
 *   shared by every JVM on the node and reclaimable; only the pages a task touches become resident.</li>
 *   <li><b>widened</b>: the small tensors kept in float32 (norms, routers, biases), once per JVM.</li>
 *   <li><b>per task slot</b>: the {@link WeightStack#SCRATCH_BYTES_PER_THREAD} tile scratch, the activations of
 *   one batch (below) and, for train, the slot's copy of the trainable state and its gradients.</li>
 * </ul>
 * Train's float32 partials (the state cut into the averaging tree's chunks) and the round's mean kept on the
 * executors ({@code KeptMean}: block-manager blocks of float arrays) are Java arrays: they are in the heap's count.
 * A surgery task's slot holds instead what one part of a layer makes and its scratch
 * ({@code LayerSurgery.partBytes}): the experts are read as stored, a block of rows at a time, never widened whole.
 *
 * <p>Activations, for N = batch windows × window tokens, are per-token float32 counts of the arrays a layer
 * allocates: the residual stream and projections {@code 4H + 2·heads·hd + 2·kvHeads·hd} (MLA: see
 * {@link #attentionProjections}), the attention's per-head copies of q, k, v and its output (the projections again)
 * and each row's log-sum-exp in float64 ({@code 2·heads}) — attention runs block by block, so nothing grows with
 * the window (no [S, S] scores; the block buffers are under 1 MiB), the MoE block's gathered rows and expert
 * intermediates {@code K·(2H + 3I)}
 * (router rows in float64: {@code 2E}), a dense or shared MLP's {@code 3I}. ND4J frees a buffer only when the
 * garbage collector finds its Java wrapper, so a layer's temporaries are summed, not overlapped. Eval adds the
 * logits of one block of rows (at most {@link Perplexity#LOGIT_BLOCK} elements, logits and log-softmax);
 * calibrate runs one layer at a time in the step workspace and computes no logits: a layer's forward, whose routed
 * rows its statistics read, and with {@code --all-experts} one expert's intermediates over every token at a time
 * ({@code 3I}; measured at the Mixtral-8x7B and Qwen1.5-MoE shapes, docs/benchmarks.md);
 * train keeps every layer's forward for the backward (2.5 × stream + FFN per layer for the forward and the backward's transients, 3 × the attention's per-head arrays
 * for the kept ones and their gradients) plus one block of rows' logits ({@link CausalLmLoss#headRows}: at most
 * {@link Perplexity#LOGIT_BLOCK} logits but at least 512 rows; their gradient written in their place: the loss takes
 * the LM head a block at a time); with {@code --checkpoint-activations}
 * it keeps each layer's input (H) and each MoE layer's router logits (E) and holds one layer's forward and backward at
 * a time (the largest), plus the block of logits. The factors were fitted to the anonymous RSS one task adds on the Mixtral-8x7B shape
 * (docs/benchmarks.md, "Memory plan against measurement"): within 10% for eval at 1, 4 and 8 windows of 256 and for
 * train at 1 and 2, when attention still kept [S, S] scores (counted {@code 2·heads·S} per token, 6 × for train);
 * the blockwise attention's count replaced that term and was not refitted. The checkpointed count was not fitted
 * (docs/benchmarks.md, "train --checkpoint-activations").
 * A μMoE adapter ({@link #mumoeFloats}) adds per token and adapted site what its forward keeps (the gates and the
 * rank-space intermediates, {@code MumoeForm.savedPerToken}, and its output O) and its backward's transients (as
 * many again, and dx of its input I): kept for every layer, or the largest layer's when checkpointed. Its factors and
 * their moments are in the state. Not fitted to a measurement.
 *
 * @param job             the job the plan is for
 * @param mappedBytes     the checkpoint's tensor bytes
 * @param widenedBytes    float32 bytes of the small tensors, per JVM
 * @param activationBytes activations of one batch, per task slot
 * @param stateBytes      train: the trainable state (parameters and both moments); 0 otherwise
 * @param partialBytes    train: what one partition's task gives the averaging tree, float32: its state, or with
 *                        gradient averaging its gradients (a third of the state); 0 otherwise
 * @param slots           task slots per executor JVM
 * @param checkpointActivations train: only layer inputs kept, one layer recomputed at a time
 * @param heapNeededBytes the heap the job needs per executor JVM ({@link #heap}), what the launcher passes as -Xmx
 * @param limits          what the executors and the driver have
 * @param layerwise       with --layerwise, the model's pieces (then {@code mappedBytes} is the largest one's); null for
 *                        a whole-model pass
 * @param distillBytes    surgery lowrank --distill-steps: what one task that trains a layer holds ({@link #distilling});
 *                        0 otherwise
 */
public record MemoryPlan(Job job, long mappedBytes, long widenedBytes, long activationBytes, long stateBytes,
                         long partialBytes, int slots, boolean checkpointActivations, long heapNeededBytes,
                         SparkLimits limits, Pieces layerwise, long distillBytes) {

    /**
     * The checkpoint's tensor bytes per piece of a layer-sequential pass: what an executor maps while it runs one.
     *
     * @param modelBytes   every tensor the model reads
     * @param largest      the largest piece's bytes
     * @param largestName  "layer N" or "embedding and LM head"
     * @param hiddenBytes  one chunk's hidden states (float32 [B·S, D]): what the pass keeps per chunk and per RDD
     * @param expertGroups G, the expert groups of an MoE layer (1: none)
     */
    public record Pieces(long modelBytes, long largest, String largestName, long hiddenBytes, int expertGroups) {
    }

    /** The jobs a plan is made for. */
    public enum Job { EVAL, CALIBRATE, TRAIN, SURGERY }

    /** A JVM's own anonymous memory besides heap and ND4J buffers: metaspace, code cache, thread stacks, Spark. */
    static final long JVM_OVERHEAD = 256L << 20;

    /**
     * The heap a job needs besides what its tasks hold: Spark's driver and executor (one JVM in embedded mode), the
     * tokenizer, the JVM's own objects, and the collector's headroom.
     */
    static final long HEAP_BASE = 384L << 20;

    /**
     * The least heap planned: Spark refuses to start in a JVM whose {@code Runtime.maxMemory()} is under 450 MiB
     * (1.5 × its 300 MiB reserved memory), and the collector's survivor space keeps that a little under -Xmx.
     */
    static final long HEAP_MIN = 512L << 20;

    /** The heap is planned in whole steps of this size (what -Xmx gets). */
    private static final long HEAP_STEP = 64L << 20;
    /**
     * --layerwise: the copies of one chunk's hidden states a task holds on the heap at once (the chunk it reads, the
     * chunk it writes, and their serialised forms as Spark stores them).
     */
    static final int LAYERWISE_CHUNK_COPIES = 4;
    /**
     * --layerwise: heap for Spark's storage of the persisted hidden-state blocks it keeps in memory before spilling to
     * disk. Without it, the Qwen1.5-MoE shape's 68-window eval failed out of memory at the 512 MiB the whole-model plan
     * gives, and passed at 1 GiB (docs/benchmarks.md).
     */
    static final long LAYERWISE_STORAGE = 256L << 20;
    /**
     * train: the most activation bytes per task slot for which a step's forward and backward run in the thread's pass
     * workspace ({@link #passWorkspace}). Below it allocation is a large share of a step (the tiny Mixtral: 36% of
     * the tasks' CPU in libnd4j's zero-filled fresh buffers) and keeping a step's bytes for the thread's life costs
     * little; above it (real shapes) the step's arithmetic dwarfs its allocations and the collector's freeing keeps
     * less memory (docs/benchmarks.md, "A small step's arrays in a workspace").
     */
    static final long PASS_WORKSPACE_MAX = 320L << 20;
    /** A surgery's heap: the launcher's -Xmx for the commands it plans no heap for. */
    static final long SURGERY_HEAP = 1L << 30;

    /**
     * @param mappedBytes the checkpoint's tensor bytes ({@code Checkpoint} headers)
     * @param stateBytes  train: {@code TrainState.bytes()} of the trainable state; 0 for the other jobs
     */
    public static MemoryPlan of(Job job, ModelConfig c, long mappedBytes, int batchWindows, int window,
                                long stateBytes, SparkLimits limits) {
        return of(job, c, mappedBytes, batchWindows, window, stateBytes, false, limits);
    }

    /** @param checkpointActivations train's --checkpoint-activations (false for the other jobs) */
    public static MemoryPlan of(Job job, ModelConfig c, long mappedBytes, int batchWindows, int window,
                                long stateBytes, boolean checkpointActivations, SparkLimits limits) {
        return of(job, c, mappedBytes, batchWindows, window, stateBytes, checkpointActivations, null, limits);
    }

    /** @param mumoe train's μMoE adapter, whose activations are added; null for none (LoRA, or the other jobs) */
    public static MemoryPlan of(Job job, ModelConfig c, long mappedBytes, int batchWindows, int window,
                                long stateBytes, boolean checkpointActivations, MumoeConfig mumoe,
                                SparkLimits limits) {
        return of(job, c, mappedBytes, batchWindows, window, stateBytes, stateBytes, checkpointActivations, mumoe,
                limits);
    }

    /**
     * @param partialBytes train: one partition's partial for the averaging tree (the state's bytes, or a third of
     *                     them with gradient averaging)
     */
    public static MemoryPlan of(Job job, ModelConfig c, long mappedBytes, int batchWindows, int window,
                                long stateBytes, long partialBytes, boolean checkpointActivations, MumoeConfig mumoe,
                                SparkLimits limits) {
        if (mumoe != null && job != Job.TRAIN) {
            throw new IllegalArgumentException("a μMoE adapter's activations are planned for train only, not " + job);
        }
        if (checkpointActivations && job != Job.TRAIN) {
            throw new IllegalArgumentException("activations are checkpointed by train only, not " + job);
        }
        int slots = limits.slotsPerExecutor();
        long tokens = (long) batchWindows * window;
        long adapter = mumoe == null ? 0 : tokens * mumoeFloats(c, mumoe, checkpointActivations) * Float.BYTES;
        return new MemoryPlan(job, mappedBytes, widened(c), activations(job, c, tokens,
                checkpointActivations) + adapter, stateBytes, partialBytes, slots, checkpointActivations,
                heap(job, c, tokens, stateBytes, partialBytes, slots, limits.partitions(), checkpointActivations),
                limits, null, 0);
    }

    /**
     * A surgery's plan: per task slot, what one part of a layer holds beside the mapped checkpoint. Its heap is the
     * launcher's default for commands without a dry-run plan, {@link #SURGERY_HEAP}.
     *
     * @param partBytes {@code LayerSurgery.partBytes}: the part's new tensors and its scratch
     */
    public static MemoryPlan surgery(long mappedBytes, long partBytes, SparkLimits limits) {
        return new MemoryPlan(Job.SURGERY, mappedBytes, 0, partBytes, 0, 0, limits.slotsPerExecutor(), false,
                SURGERY_HEAP, limits, null, 0);
    }

    /**
     * The heap one executor JVM needs, at least {@link #HEAP_MIN}, rounded up to 64 MiB: {@link #HEAP_BASE}, plus per task slot the Java arrays a
     * task holds at once — eval {@link #evalHeapBytes}, calibrate a block of an expert's inputs and intermediates read
     * as floats ({@link ExpertActivationStats#BLOCK_FLOATS} each), train a step's arrays ({@link #trainHeapBytes}) and its float32 partial
     * ({@link StateMean}'s chunks: the state's bytes, or its gradients') — and for train the
     * averaging tree's reduce, which holds one chunk of every partition's partial and their mean, and the round's mean
     * kept in the block manager (the whole state, at most, in one JVM). Activations, weights and the tasks' state
     * tensors live off the heap (ND4J buffers, mapped files) and are not counted here.
     */
    static long heap(Job job, ModelConfig c, long tokens, long stateBytes, long partialBytes, int slots,
                     int partitions, boolean checkpointed) {
        long perSlot = switch (job) {
            case EVAL -> evalHeapBytes(c, tokens);
            case CALIBRATE -> 2L * ExpertActivationStats.BLOCK_FLOATS * Float.BYTES;
            case TRAIN -> trainHeapBytes(c, tokens, checkpointed) + partialBytes;
            case SURGERY -> throw new IllegalStateException("a surgery's plan comes from MemoryPlan.surgery");
        };
        long reduceAndKept = job == Job.TRAIN
                ? (Math.max(partitions, slots) + 1L) * Math.min(partialBytes, StateMean.CHUNK_BYTES) + stateBytes : 0;
        long bytes = Math.max(HEAP_MIN, HEAP_BASE + slots * perSlot + reduceAndKept);
        return (bytes + HEAP_STEP - 1) / HEAP_STEP * HEAP_STEP;
    }

    /**
     * The Java arrays a train step holds at once beside ND4J's buffers, for a step of {@code tokens} = T, with the
     * routed experts of the LoRA and μMoE forms that keep no per-row arrays of their own (the full experts). What each
     * layer's forward keeps for the backward: RMSNorm's two float64 inverse norms [T] (MLA's two latent norms add two
     * more), the attention's float64 log-sum-exp [T, H], a per-head q/k norm's inverse norms [T, H + KVH] (Qwen3; a
     * whole-projection one, OLMoE's, [T] each), and in an MoE layer the router's float64 scores [T, E], the routes
     * and the routing plan (12 bytes per token and choice each) and a shared expert's gates [T]; every layer's, or
     * with {@code checkpointed} (--checkpoint-activations) the largest layer's twice (the layer recomputed and the one
     * before it, still referenced while the next runs). Beside them: the MoE layers' float64 expert-weight gradients
     * [T, K], built up over the backward; the final norm's [T]; and the larger of the loss's float64 block of logits
     * ({@link CausalLmLoss#BLOCK_ELEMENTS}) and one MoE layer's scratch — its router gradient [T, E] in float64, the
     * combine's rows [T, K], with router jitter its float64 noise [T, D], with a shared expert three float64 [T, D]
     * arrays in the backward (two in the forward). Clipping and AdamW after the backward go through the gradients and
     * the state {@code AdamW.CHUNK} elements at a time (under 200 KiB).
     */
    static long trainHeapBytes(ModelConfig c, long tokens, boolean checkpointed) {
        long qkNorm = switch (c.qkNorm) {
            case PER_HEAD -> (long) c.num_attention_heads + c.num_key_value_heads;
            case WHOLE -> 2;
            case NONE -> 0;
        };
        long shared = c.shared_expert_intermediate_size > 0 ? 1 : 0;
        long jitter = c.router_jitter_noise > 0 ? 1 : 0;
        long mlaNorms = c.mla != null ? 2 : 0;
        long keptSum = 0;
        long keptMax = 0;
        long expertWeightGrads = 0;
        long scratch = 0;
        for (int l = 0; l < c.num_hidden_layers; l++) {
            long kept = (2 + mlaNorms + c.num_attention_heads + qkNorm) * Double.BYTES;            // per token
            if (c.isMoeLayer(l)) {
                kept += (long) c.num_experts * Double.BYTES + 24L * c.num_experts_per_tok + shared * Double.BYTES;
                expertWeightGrads += (long) c.num_experts_per_tok * Double.BYTES;
                scratch = Math.max(scratch, (long) c.num_experts * Double.BYTES + 8L * c.num_experts_per_tok + 4
                        + jitter * c.hidden_size * Double.BYTES
                        + shared * (3L * c.hidden_size * Double.BYTES + Double.BYTES));
            }
            keptSum += kept;
            keptMax = Math.max(keptMax, kept);
        }
        long perToken = (checkpointed ? 2 * keptMax : keptSum) + expertWeightGrads + Double.BYTES;
        return tokens * perToken + Math.max(CausalLmLoss.BLOCK_ELEMENTS * Double.BYTES, tokens * scratch);
    }

    /**
     * The Java arrays an eval task holds at once beside ND4J's buffers, for a forward of {@code tokens} = T: the
     * router's logits in float64 [T, E]; with a shared expert (Qwen2-MoE, DeepSeek, GLM-4.5) its float64 output and
     * the block's float64 sum [T, D] each; with OLMoE's clamp of q, k and v, one of them as floats [T, H·hd]; with
     * gpt-oss, a tile of decoded MXFP4 weights as floats ({@link WeightStack#SCRATCH_BYTES_PER_THREAD}); and
     * {@code Perplexity}'s row of logits as floats with its float64 scratch [V] (the block of logits stays in native
     * memory).
     */
    static long evalHeapBytes(ModelConfig c, long tokens) {
        long router = tokens * c.num_experts * Double.BYTES;
        long shared = c.shared_expert_intermediate_size > 0 ? 2 * tokens * c.hidden_size * Double.BYTES : 0;
        long clamp = c.clip_qkv != null ? tokens * c.num_attention_heads * c.head_dim * Float.BYTES : 0;
        long decoded = c.modelType == ModelConfig.ModelType.GPT_OSS ? WeightStack.SCRATCH_BYTES_PER_THREAD : 0;
        return router + shared + clamp + decoded + (long) c.vocab_size * (Float.BYTES + Double.BYTES);
    }

    /**
     * Per-token floats a μMoE adapter's terms hold in train (see the class comment): 2·saved + O + I per adapted
     * site, summed over every layer, or the largest layer's sum when {@code checkpointed}.
     */
    static long mumoeFloats(ModelConfig c, MumoeConfig mumoe, boolean checkpointed) {
        long[] perLayer = new long[c.num_hidden_layers];
        for (MumoeConfig.Placement p : mumoe.placements(c)) {
            perLayer[p.key().layer()] += 2 * mumoe.form().savedPerToken(mumoe.expertDims(), mumoe.ranks()) + p.out()
                    + p.in();
        }
        return checkpointed ? java.util.Arrays.stream(perLayer).max().orElse(0)
                : java.util.Arrays.stream(perLayer).sum();
    }

    /**
     * This eval plan with a second model on every executor (eval --baseline): both checkpoints mapped, both models'
     * widened tensors, and per slot the larger of the two forwards plus what outlives the baseline's (its final
     * hidden rows [N, D], kept while the model runs) and the baseline's block of logits beside the model's, and on
     * the heap the baseline's forward arrays and row of logits beside the model's ({@link #evalHeapBytes}).
     */
    public MemoryPlan withBaseline(ModelConfig baseline, long baselineMappedBytes, int batchWindows, int window) {
        if (job != Job.EVAL) {
            throw new IllegalArgumentException("a baseline model is compared by eval only, not " + job);
        }
        long tokens = (long) batchWindows * window;
        long kept = (tokens * baseline.hidden_size + Math.min(tokens * baseline.vocab_size, Perplexity.LOGIT_BLOCK))
                * Float.BYTES;
        long activations = Math.max(activationBytes, activations(job, baseline, tokens, false)) + kept;
        long baselineHeap = evalHeapBytes(baseline, tokens);       // its forward's arrays and its row of logits
        long heap = (heapNeededBytes + slots * baselineHeap + HEAP_STEP - 1) / HEAP_STEP * HEAP_STEP;
        return new MemoryPlan(job, mappedBytes + baselineMappedBytes, widenedBytes + widened(baseline), activations,
                stateBytes, partialBytes, slots, checkpointActivations, heap, limits, layerwise, distillBytes);
    }

    /**
     * This plan for a layer-sequential pass (--layerwise): an executor maps one piece at a time (a decoder layer, or
     * the embedding with the final norm and LM head), so its weights are the largest piece's, not the model's; with
     * G expert groups an MoE layer's experts run as G tasks per chunk partition, so an executor's slots touch at most
     * min(slots, G) groups' experts at once (of ⌈E/G⌉ experts each) beside the layer's other weights. A chunk of B
     * windows of S tokens travels as [B·S, D] float32 hidden states.
     *
     * @param tensorBytes the checkpoint's tensors' bytes by name ({@link #tensorBytes(String, Configuration)})
     * @param groups      G, 1 for none
     */
    public MemoryPlan layerwise(ModelConfig c, Map<String, Long> tensorBytes, int batchWindows, int window,
                                int groups) {
        Pieces p = pieces(c, tensorBytes, batchWindows, window, groups);
        return new MemoryPlan(job, p.largest(), widenedBytes, activationBytes, stateBytes, partialBytes, slots,
                checkpointActivations, passHeap(heapNeededBytes, p), limits, p, distillBytes);
    }

    /**
     * This surgery plan with lowrank's distillation (--distill-steps): a layer-sequential pass of the original model
     * at {@code modelUri} over chunks of B windows of S tokens (as {@link #layerwise} plans it, the mapped checkpoint
     * left whole: the surgery's tasks read every layer), and per MoE layer one task that trains it, while the pass
     * goes on, in any slot. A slot holds the larger of a surgery part and {@code distillBytes}: a pass task (one
     * layer's activations on one chunk, eval's count) or a layer's training — X_l, its float32 copy and the original
     * layer's outputs Y_l (3·T·D floats) and the MoE activations of the teacher's blocks of
     * {@link LowRankDistillation#EVAL_CHUNK} tokens and of a step's batch (forward and backward: three times), the
     * form's own factor-space activations included. Not fitted to a measurement.
     *
     * @param tokens      T: at most the files × the windows of --distill-tokens × S
     * @param batchTokens tokens per distillation step (--distill-batch)
     * @param formFloats  the form's factor-space activations per token besides the experts' [N, I] and [N, D] rows
     *                    ({@link org.sparkmoe.experts.CpExperts#factorFloatsPerToken}, {@link
     *                    org.sparkmoe.experts.TrExperts#factorFloatsPerToken}; 0 for the SVD form)
     */
    public MemoryPlan distilling(String modelUri, Configuration conf, ModelConfig c, int batchWindows, int window,
                                 long tokens, int batchTokens, long formFloats) {
        if (job != Job.SURGERY) {
            throw new IllegalArgumentException("a distillation is planned for surgery only, not " + job);
        }
        Pieces p = pieces(c, tensorBytes(modelUri, conf), batchWindows, window, 1);
        long moe = (long) c.num_experts_per_tok * (2L * c.hidden_size + 3L * c.expert_intermediate_size)
                + 2L * c.num_experts + formFloats;                                      // per token, floats
        long training = (3 * tokens * c.hidden_size
                + (Math.min(tokens, LowRankDistillation.EVAL_CHUNK) + 3L * Math.min(tokens, batchTokens)) * moe)
                * Float.BYTES;
        long pass = activations(Job.EVAL, c, (long) batchWindows * window, false);
        return new MemoryPlan(job, mappedBytes, widenedBytes, activationBytes, stateBytes, partialBytes, slots,
                checkpointActivations, passHeap(heapNeededBytes, p), limits, p, Math.max(pass, training));
    }

    /**
     * The pieces of a model for a layer-sequential pass over chunks of B windows of S tokens, with G expert groups:
     * the largest piece is what an executor maps at once.
     */
    private Pieces pieces(ModelConfig c, Map<String, Long> tensorBytes, int batchWindows, int window, int groups) {
        long[] pieces = new long[c.num_hidden_layers + 1];          // layer 0..L-1, then the ends
        long[] experts = new long[c.num_hidden_layers];             // the routed experts' share of each layer
        CheckpointLayout layout = new CheckpointLayout(c.modelType);
        for (Map.Entry<String, Long> t : tensorBytes.entrySet()) {
            int layer = layerOf(t.getKey());
            if (layer < c.num_hidden_layers) {                      // a later layer (DeepSeek's MTP) is never read
                pieces[layer < 0 ? c.num_hidden_layers : layer] += t.getValue();
                if (layer >= 0 && c.isMoeLayer(layer) && t.getKey().startsWith(layout.moePrefix(layer) + "experts.")) {
                    experts[layer] += t.getValue();
                }
            }
        }
        long perGroup = c.num_experts == 0 ? 0 : (c.num_experts + groups - 1) / groups;     // ⌈E/G⌉ experts
        long touched = Math.min(slots, groups) * perGroup;                                  // experts at once
        int largest = 0;
        long model = 0;
        long[] mapped = new long[pieces.length];
        for (int i = 0; i < pieces.length; i++) {
            model += pieces[i];
            mapped[i] = i < c.num_hidden_layers && experts[i] > 0 && touched < c.num_experts
                    ? pieces[i] - experts[i] + experts[i] / c.num_experts * touched : pieces[i];
            largest = mapped[i] > mapped[largest] ? i : largest;
        }
        String name = largest == c.num_hidden_layers ? "embedding and LM head" : "layer " + largest
                + (mapped[largest] < pieces[largest] ? " with " + Math.min(slots, groups) + " of its " + groups
                + " expert groups (" + perGroup + " experts each) at once" : "");
        return new Pieces(model, mapped[largest], name, (long) batchWindows * window * c.hidden_size * Float.BYTES,
                groups);
    }

    /** {@code heap} and what a pass adds: per task slot its chunks' copies, and the persisted blocks' storage. */
    private long passHeap(long heap, Pieces p) {
        long bytes = heap + slots * LAYERWISE_CHUNK_COPIES * p.hiddenBytes() + LAYERWISE_STORAGE;
        return (bytes + HEAP_STEP - 1) / HEAP_STEP * HEAP_STEP;
    }

    /**
     * Whether one executor holds this plan: everything it needs ({@link #totalBytes}) within what it has in all
     * ({@link SparkLimits#memoryBytes}); true when that is not known.
     */
    public boolean fits() {
        long memory = limits.memoryBytes();
        return memory == 0 || totalBytes() <= memory;
    }

    /**
     * What an executor needs in all: the mapped weights, native memory, the JVM's own and the heap, the larger of the
     * one it has and the one this plan needs (what the launcher gives it in embedded mode: a dry run in a small JVM
     * and the job in the planned one then choose alike).
     */
    public long totalBytes() {
        return mappedBytes + nativeBytes() + JVM_OVERHEAD + Math.max(limits.heapBytes(), heapNeededBytes);
    }

    /** {@link #totalBytes} and its parts, for the line that says the memory plan's choice. */
    public String needs() {
        return size(totalBytes()) + " of an executor (mapped weights " + size(mappedBytes) + " + native "
                + size(nativeBytes()) + " + heap " + size(Math.max(limits.heapBytes(), heapNeededBytes)) + " + JVM "
                + size(JVM_OVERHEAD) + ")";
    }

    /**
     * The layer-sequential plan this whole-model plan turns into when it does not fit an executor ({@link #fits})
     * and one layer does: the fewest expert groups G (1, else a power of 2 dividing the E experts) that fit; null when
     * no G fits. A model whose experts are not split into groups (dense, low-rank experts) tries G = 1 only.
     */
    public MemoryPlan smallestLayerwise(ModelConfig c, Map<String, Long> tensorBytes, int batchWindows, int window) {
        boolean grouped = c.num_experts > 0 && !c.hasLowRankExperts();
        for (int g = 1; g == 1 || grouped && g <= c.num_experts && c.num_experts % g == 0; g *= 2) {
            MemoryPlan plan = layerwise(c, tensorBytes, batchWindows, window, g);
            if (plan.fits()) {
                return plan;
            }
        }
        return null;
    }

    /** The tensor bytes of the checkpoint in {@code modelUri} by name, from its headers. */
    public static Map<String, Long> tensorBytes(String modelUri, Configuration conf) {
        Map<String, Long> out = new LinkedHashMap<>();
        try (Checkpoint checkpoint = Checkpoint.open(new Path(modelUri), conf)) {
            for (String name : checkpoint.names()) {
                out.put(name, checkpoint.info(name).byteLength());
            }
        }
        return out;
    }

    /** N for a tensor named model.layers.N.…, else −1. */
    private static int layerOf(String name) {
        String prefix = "model.layers.";
        if (!name.startsWith(prefix)) {
            return -1;
        }
        int end = name.indexOf('.', prefix.length());
        try {
            return Integer.parseInt(name.substring(prefix.length(), end < 0 ? name.length() : end));
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /** The tensor bytes of the checkpoint in {@code modelUri}, from its headers. */
    public static long mappedBytes(String modelUri, Configuration conf) {
        return tensorBytes(modelUri, conf).values().stream().mapToLong(Long::longValue).sum();
    }

    /** Norms, routers (and their biases) in float32. */
    static long widened(ModelConfig c) {
        long floats = (2L * c.num_hidden_layers + 1) * c.hidden_size;
        for (int l = 0; l < c.num_hidden_layers; l++) {
            if (c.isMoeLayer(l)) {
                floats += (long) c.num_experts * (c.hidden_size + 1);
            }
        }
        return floats * Float.BYTES;
    }

    /**
     * Per-token floats of the attention's projections: q and the attention output (H·hd each) and k, v (KVH·hd each);
     * for DeepSeek's MLA, q and k of qk_head_dim per head, v and the output of v_head_dim per head, and the latent
     * (kv_lora_rank + the shared rope key).
     */
    static long attentionProjections(ModelConfig c) {
        long heads = c.num_attention_heads;
        if (c.mla == null) {
            return 2 * heads * c.head_dim + 2L * c.num_key_value_heads * c.head_dim;
        }
        return 2 * heads * c.mla.qk_head_dim() + 2 * heads * c.mla.v_head_dim() + c.mla.kv_lora_rank()
                + c.mla.qk_rope_head_dim();
    }

    /**
     * Activation bytes of one batch of {@code tokens} = batch windows × window tokens (see the class comment);
     * {@code checkpointed}: train keeping layer inputs and router logits, one layer's activations at a time.
     */
    static long activations(Job job, ModelConfig c, long tokens, boolean checkpointed) {
        long h = c.hidden_size;
        long stream = 4 * h + attentionProjections(c);
        long attention = attentionProjections(c) + 2L * c.num_attention_heads;   // per-head q, k, v, out; lse
        long layersForward = 0;     // Σ over layers of per-token floats live while that layer runs
        long layersKept = 0;        // Σ over layers of per-token floats train keeps and their backward transients
        long layerKept = 0;         // the largest of one layer's: what a checkpointed backward recomputes and holds
        long moeLayers = 0;
        for (int l = 0; l < c.num_hidden_layers; l++) {
            long ffn = 0;
            if (c.isMoeLayer(l)) {
                moeLayers++;
                ffn += (long) c.num_experts_per_tok * (2 * h + 3L * c.expert_intermediate_size)
                        + 2L * c.num_experts + 3L * c.shared_expert_intermediate_size;
            } else {
                ffn += 3L * c.intermediate_size;
            }
            layersForward = Math.max(layersForward, stream + attention + ffn);
            long kept = (5 * (stream + ffn)) / 2 + 3 * attention;
            layersKept += kept;
            layerKept = Math.max(layerKept, kept);
        }
        long perToken;
        long logits;
        switch (job) {
            case EVAL -> {
                perToken = layersForward;
                logits = 2 * Math.min(tokens * c.vocab_size, Perplexity.LOGIT_BLOCK);
            }
            case CALIBRATE -> {     // one layer at a time, its statistics from its routed rows; --all-experts: 3I
                perToken = layersForward + 3L * c.expert_intermediate_size;
                logits = 0;
            }
            case TRAIN -> {
                perToken = checkpointed ? layerKept + c.num_hidden_layers * h + moeLayers * c.num_experts
                        : layersKept;
                logits = CausalLmLoss.headRows(tokens, c.vocab_size) * c.vocab_size;  // dlogits in place
            }
            default -> throw new IllegalStateException(job.toString());
        }
        return (tokens * perToken + logits) * Float.BYTES;
    }

    /**
     * train: whether each step's forward and backward reuse the thread's pass workspace (TrainOptions.passWorkspace):
     * activations of at most {@link #PASS_WORKSPACE_MAX} per slot, every layer's kept (a checkpointed backward frees
     * each recomputed layer, which a workspace would keep). The slot's activations are then held between steps too.
     */
    public boolean passWorkspace() {
        return job == Job.TRAIN && !checkpointActivations && activationBytes <= PASS_WORKSPACE_MAX;
    }

    /**
     * One task slot: scratch, activations and, for train, its state copy and gradients; for a
     * surgery, one part's new tensors and scratch or, the larger, a distillation task's.
     */
    public long perSlotBytes() {
        if (job == Job.SURGERY) {
            return Math.max(activationBytes, distillBytes);
        }
        long state = job == Job.TRAIN ? trainSlotStateBytes() : 0;
        return WeightStack.SCRATCH_BYTES_PER_THREAD + activationBytes + state;
    }

    /** Native (off-heap) bytes of one executor JVM: what its ND4J buffers add to the heap. */
    public long nativeBytes() {
        return widenedBytes + (long) slots * perSlotBytes();
    }

    /** Anonymous memory of one executor JVM: heap, JVM overhead and native bytes (the mapped weights excluded). */
    public long anonymousBytes() {
        return limits.heapBytes() + JVM_OVERHEAD + nativeBytes();
    }

    /** Train, per slot: the state copy and its gradients (the parameters' size: a third). */
    private long trainSlotStateBytes() {
        return stateBytes + stateBytes / 3;
    }

    /** The plan, one part per line, each starting with "memory plan:". */
    public String describe() {
        String prefix = "memory plan: ";
        StringBuilder out = new StringBuilder();
        out.append(prefix).append(String.format(Locale.ROOT, "%s per executor JVM of %s, %d task slot%s",
                job.name().toLowerCase(Locale.ROOT), limits.describe(), slots, slots == 1 ? "" : "s")).append('\n');
        out.append(prefix).append("mapped weights ").append(size(mappedBytes))
                .append(" (file-backed, shared by the node's JVMs; only touched pages are resident)\n");
        if (layerwise != null && job == Job.SURGERY) {
            out.append(prefix).append("distillation: the original model runs as a layer-sequential pass, its "
                    + "largest piece ").append(layerwise.largestName()).append(" of ")
                    .append(size(layerwise.modelBytes())).append("; hidden states ")
                    .append(size(layerwise.hiddenBytes())).append(" per chunk (memory and disk); one task per MoE "
                    + "layer trains it on the layer's X [T, D], while the pass goes on\n");
        } else if (layerwise != null) {
            out.append(prefix).append("--layerwise: weights per executor = the largest piece, ")
                    .append(layerwise.largestName()).append(", of ").append(size(layerwise.modelBytes()))
                    .append(" for the whole model; hidden states ").append(size(layerwise.hiddenBytes()))
                    .append(" per chunk, two layers' RDDs persisted at once (memory and disk)\n");
        }
        out.append(prefix).append("native ").append(size(nativeBytes()));
        if (job == Job.SURGERY && distillBytes > 0) {
            out.append(" = ").append(slots).append(" × the larger of (one part's new tensors and scratch ")
                    .append(size(activationBytes)).append(", a distillation task's ").append(size(distillBytes))
                    .append(": a pass task on one chunk, or a layer's training on its X, a copy and Y [T, D]");
        } else if (job == Job.SURGERY) {
            out.append(" = ").append(slots).append(" × (one part's new tensors and scratch ")
                    .append(size(activationBytes)).append("; the experts are read as stored, a block of rows at a time");
        } else {
            out.append(" = widened tensors ").append(size(widenedBytes)).append(" + ").append(slots)
                    .append(" × (scratch ").append(size(WeightStack.SCRATCH_BYTES_PER_THREAD))
                    .append(" + activations ").append(size(activationBytes));
        }
        if (job == Job.TRAIN) {
            out.append(" + state copy and gradients ").append(size(trainSlotStateBytes())).append(')');
        } else {
            out.append(')');
        }
        out.append('\n');
        if (job == Job.TRAIN) {
            out.append(prefix).append(checkpointActivations
                    ? "activations checkpointed (--checkpoint-activations): every layer's input and router logits "
                    + "kept, one layer's activations at a time (recomputed in the backward)\n"
                    : "activations of every layer kept for the backward (--checkpoint-activations keeps only the "
                    + "layer inputs and recomputes one layer at a time)" + (passWorkspace()
                    ? "; at most " + size(PASS_WORKSPACE_MAX) + " per slot, so each task thread reuses them from "
                    + "step to step (held between steps)" : "") + "\n");
        }
        if (job == Job.SURGERY && layerwise == null) {
            out.append(prefix).append("heap ").append(size(heapNeededBytes)).append(" (-Xmx")
                    .append(heapNeededBytes >> 20).append("m: the launcher's default for surgery)\n");
        } else if (job == Job.SURGERY) {
            out.append(prefix).append("heap needed ").append(size(heapNeededBytes)).append(" (-Xmx")
                    .append(heapNeededBytes >> 20).append("m; the launcher's default in embedded mode): surgery's ")
                    .append(size(SURGERY_HEAP)).append(" + per task slot ").append(LAYERWISE_CHUNK_COPIES)
                    .append(" copies of a chunk's hidden states + ").append(size(LAYERWISE_STORAGE))
                    .append(" for the persisted hidden states\n");
        } else {
            out.append(prefix).append("heap needed ").append(size(heapNeededBytes)).append(" (-Xmx")
                .append(heapNeededBytes >> 20).append("m; the launcher's default in embedded mode): base ")
                .append(size(HEAP_BASE)).append(" + per task slot ").append(job == Job.TRAIN
                        ? "a step's Java arrays (" + (checkpointActivations ? "one layer's recomputed"
                        : "every layer's kept") + " for the backward, the loss's block) and the float32 partial of "
                        + "the state"
                        : job == Job.EVAL ? "the forward's Java arrays (router logits, shared expert) and a row "
                        + "of logits"
                        : "a block of an expert's inputs and intermediates read as floats").append(job == Job.TRAIN
                        ? " + the averaging tree's chunks + the kept mean" : "").append(layerwise == null ? ""
                        : " + per task slot " + LAYERWISE_CHUNK_COPIES + " copies of a chunk's hidden states + "
                        + size(LAYERWISE_STORAGE) + " for the persisted hidden states").append('\n');
        }
        out.append(prefix).append("anonymous ").append(size(anonymousBytes())).append(" = heap ")
                .append(size(limits.heapBytes())).append(" + JVM ").append(size(JVM_OVERHEAD)).append(" + native\n");
        if (job == Job.TRAIN) {
            String partials = (limits.partitions() > 0 ? limits.partitions() + " × " + size(partialBytes)
                    : size(partialBytes) + " per partition") + (partialBytes < stateBytes ? " of gradients" : "");
            long span = limits.partitions() > 0
                    ? RoundTree.driverSpan(limits.partitions(), partialBytes, limits.driverAveragingBytes()) : 0;
            out.append(prefix).append("per round: ");
            if (span >= 1 && span < limits.partitions()) {
                out.append("partials ").append(partials).append(" kept by the executors")
                        .append(span > 1 ? ", averaged through the shuffle to span " + span + "," : "")
                        .append(" and averaged on the driver (up to ").append(size(limits.driverAveragingBytes()))
                        .append(": ").append(SparkLimits.DRIVER_AVERAGING_KEY).append("), which keeps the mean ")
                        .append(size(stateBytes)).append(" for the next round's tasks to fetch once per executor\n");
            } else {
                out.append("the last mean ").append(size(stateBytes))
                        .append(" kept on the executors in blocks of at most ").append(size(StateMean.CHUNK_BYTES))
                        .append(" (a task reads it from its own executor, or fetches it once from the one that made "
                                + "it); partials ").append(partials).append(" averaged through the shuffle; the driver "
                                + "reads the mean only for a checkpoint and the last round\n");
            }
        }
        return out.toString();
    }

    /**
     * Refuses, in one line naming what to change, a plan that cannot fit: native memory over what the executor
     * has for it (see {@link SparkLimits#nativeBudgetBytes}). Train's partials and averaged state never travel as task
     * results (they stay in block managers, {@code KeptMean}), so spark.driver.maxResultSize does not bound them.
     */
    public void check() {
        long budget = limits.nativeBudgetBytes();
        long need = nativeBytes() + (limits.containerised() ? JVM_OVERHEAD : 0);
        if (budget > 0 && need > budget && job == Job.SURGERY) {
            boolean distilling = distillBytes > activationBytes;
            throw new IllegalArgumentException(String.format(Locale.ROOT, "memory plan: an executor needs %s beside "
                            + "its heap (%d task slot%s × %s for %s), over %s; %s%s",
                    size(need), slots, slots == 1 ? "" : "s", size(perSlotBytes()), distilling
                            ? "a distillation task: a pass task on one chunk, or a layer's training on X and Y [T, D]"
                            : "one part's new tensors and scratch", limits.nativeBudgetSource(),
                    distilling ? "lower --distill-tokens or --window, or " : "", limits.raiseHint(need)));
        }
        if (budget > 0 && need > budget) {
            throw new IllegalArgumentException(String.format(Locale.ROOT, "memory plan: an executor needs %s beside "
                            + "its heap (%d task slot%s × %s for --batch-windows × --window activations%s, plus %s), "
                            + "over %s; lower --batch-windows or --window, or %s",
                    size(need), slots, slots == 1 ? "" : "s", size(perSlotBytes()),
                    job == Job.TRAIN ? " and the state" : "", size(need - (long) slots * perSlotBytes()),
                    limits.nativeBudgetSource(), limits.raiseHint(need)));
        }
    }

    /** Bytes in binary units, three significant figures. */
    public static String size(long bytes) {
        String[] units = {"B", "KiB", "MiB", "GiB", "TiB"};
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? bytes + " B" : String.format(Locale.ROOT, v >= 100 ? "%.0f %s" : v >= 10 ? "%.1f %s"
                : "%.2f %s", v, units[u]);
    }
}
