package org.sparkmoe.model;

import org.sparkmoe.io.FusedExperts;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.sparkmoe.experts.CpExperts;
import org.sparkmoe.experts.CpFactors;
import org.sparkmoe.experts.DeviceExperts;
import org.sparkmoe.experts.ExpertWeights;
import org.sparkmoe.experts.FullExperts;
import org.sparkmoe.experts.LowRankAdapters;
import org.sparkmoe.experts.LowRankFactorised;
import org.sparkmoe.experts.LowRankWeights;
import org.sparkmoe.experts.SharedExpert;
import org.sparkmoe.experts.SwiGluMlp;
import org.sparkmoe.experts.TrExperts;
import org.sparkmoe.experts.TrFactors;
import org.sparkmoe.io.CheckpointLayout;
import org.sparkmoe.io.CheckpointLayout.CpFactor;
import org.sparkmoe.io.CheckpointLayout.Projection;
import org.sparkmoe.io.CheckpointLayout.TrCore;
import org.sparkmoe.io.MlaConfig;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.io.Mxfp4;
import org.sparkmoe.io.TensorSource;
import org.sparkmoe.kernels.CudaGroupedGemm;
import org.sparkmoe.kernels.GatedActivation;
import org.sparkmoe.kernels.GroupedGemm;
import org.sparkmoe.kernels.WeightStack;
import org.sparkmoe.moe.MoeBlock;
import org.sparkmoe.routing.Router;
import org.sparkmoe.routing.RouterOptions;
import org.sparkmoe.routing.RoutingRule;

import java.util.ArrayList;
import java.util.List;

/** Builds a {@link MoeTransformer} from checkpoint tensors, checking every shape against config.json. */
public final class ModelLoader {
    private final ModelConfig config;
    private final TensorSource tensors;
    private final CheckpointLayout layout;
    private final DataType dataType;
    private final OwnedArrays owned = new OwnedArrays();    // what the model being built allocates

    private ModelLoader(ModelConfig config, TensorSource tensors, DataType dataType) {
        this.config = config;
        this.tensors = tensors;
        this.layout = new CheckpointLayout(config.modelType);
        this.dataType = dataType;
    }

    /**
     * The model computing in float32 (what inference and training use), its matrices in their stored type over the
     * checkpoint's memory maps (see {@link TensorSource#stored}); vectors and routers widened into memory.
     */
    public static MoeTransformer load(ModelConfig config, TensorSource tensors, GroupedGemm gemm) {
        return load(config, tensors, gemm, DataType.FLOAT);
    }

    /**
     * The model computing in {@code dataType}: FLOAT as above, or DOUBLE with every weight widened into memory, for
     * float64 gradient checks of the training path ({@link MoeTransformer#forward} itself computes in float32 only).
     */
    public static MoeTransformer load(ModelConfig config, TensorSource tensors, GroupedGemm gemm, DataType dataType) {
        if (dataType != DataType.FLOAT && dataType != DataType.DOUBLE) {
            throw new IllegalArgumentException("a model loads as FLOAT or DOUBLE, got " + dataType);
        }
        return load(config, tensors, gemm, dataType, onDevice(gemm));
    }

    /**
     * The float32 model, each MoE layer's full experts on the device layer {@code placement} puts them on (null from
     * it: over {@code gemm} alone), released with the model. With a {@link CudaGroupedGemm} the load
     * methods above put them on the fused bf16 CUDA layer where it fits them; tests pass a reference layer.
     */
    public static MoeTransformer load(ModelConfig config, TensorSource tensors, GroupedGemm gemm,
                                      DeviceExperts.Placement placement) {
        return load(config, tensors, gemm, DataType.FLOAT, placement);
    }

    private static MoeTransformer load(ModelConfig config, TensorSource tensors, GroupedGemm gemm, DataType dataType,
                                       DeviceExperts.Placement placement) {
        ModelLoader loader = checked(config, tensors, dataType);
        List<DecoderLayer> layers = new ArrayList<>();
        for (int l = 0; l < config.num_hidden_layers; l++) {
            layers.add(loader.layer(l, gemm, placement));
        }
        return new MoeTransformer(loader.ends(), layers, loader.owned);
    }

    /** Where {@code gemm}'s device puts full experts: the bf16 CUDA layer for a {@link CudaGroupedGemm}, else none. */
    private static DeviceExperts.Placement onDevice(GroupedGemm gemm) {
        if (gemm instanceof CudaGroupedGemm cuda) {
            return (l, w) -> DeviceExperts.fits(w) ? DeviceExperts.cuda("decoder layer " + l, w, cuda.ordinal())
                    : null;
        }
        return (l, w) -> null;
    }

    /** A model piece built alone and the arrays it allocated for itself (what a cache frees on eviction). */
    public record Piece<T>(T piece, OwnedArrays owned) {
    }

    /**
     * Decoder layer {@code l} alone, computing in float32, its matrices over the checkpoint's memory maps as in
     * {@link #load(ModelConfig, TensorSource, GroupedGemm)}: no other layer's tensor is read. For a layer-sequential
     * pass; bit for bit the layer {@link #load} builds.
     */
    public static Piece<DecoderLayer> layer(ModelConfig config, TensorSource tensors, GroupedGemm gemm, int l) {
        if (l < 0 || l >= config.num_hidden_layers) {
            throw new IllegalArgumentException("layer " + l + " is outside the model's " + config.num_hidden_layers
                    + " layers");
        }
        ModelLoader loader = checked(config, tensors, DataType.FLOAT);
        return new Piece<>(loader.layer(l, gemm, onDevice(gemm)), loader.owned);
    }

    /** The embedding, final norm and LM head alone (no decoder layer), computing in float32; see {@link #layer}. */
    public static Piece<ModelEnds> ends(ModelConfig config, TensorSource tensors) {
        ModelLoader loader = checked(config, tensors, DataType.FLOAT);
        return new Piece<>(loader.ends(), loader.owned);
    }

    /** A loader over the per-expert view of {@code tensors}, whose names and shapes were checked against config. */
    private static ModelLoader checked(ModelConfig config, TensorSource tensors, DataType dataType) {
        if (!Nd4j.getEnvironment().isCPU()) {
            // BlasMatrices and NativeElements work on ND4J's host buffers, which a GPU backend does not keep current
            throw new IllegalArgumentException("ND4J's GPU backend (a -Pcuda build) is not supported yet: the model "
                    + "runs on ND4J's CPU backend (nd4j-native); for GPU experts use --device cuda");
        }
        TensorSource view = FusedExperts.perExpert(tensors, config);
        ModelSchema.check(config, view);
        return new ModelLoader(config, view, dataType);
    }

    private ModelEnds ends() {
        INDArray embed = matrix(CheckpointLayout.embedTokens());
        RmsNorm finalNorm = new RmsNorm(tensor(CheckpointLayout.finalNorm()), config.rms_norm_eps);
        INDArray lmHead = config.tie_word_embeddings && !tensors.has(CheckpointLayout.lmHead())
                ? embed : matrix(CheckpointLayout.lmHead());
        return new ModelEnds(config, embed, finalNorm, lmHead);
    }

    private DecoderLayer layer(int l, GroupedGemm gemm, DeviceExperts.Placement placement) {
        SelfAttention attention = config.mla != null ? latentAttention(l) : groupedAttention(l);
        RmsNorm inputNorm = new RmsNorm(tensor(CheckpointLayout.inputNorm(l)), config.rms_norm_eps);
        RmsNorm postNorm = new RmsNorm(tensor(CheckpointLayout.postAttentionNorm(l)), config.rms_norm_eps);
        if (!config.isMoeLayer(l)) {
            SwiGluMlp mlp = new SwiGluMlp(
                    matrix(CheckpointLayout.denseMlp(l, Projection.GATE)),
                    matrix(CheckpointLayout.denseMlp(l, Projection.UP)),
                    matrix(CheckpointLayout.denseMlp(l, Projection.DOWN)));
            return new DecoderLayer(inputNorm, attention, postNorm, null, mlp);
        }
        return new DecoderLayer(inputNorm, attention, postNorm, moeBlock(l, gemm, placement), null);
    }

    private Attention groupedAttention(int l) {
        boolean bias = config.qkv_bias;
        return new Attention(
                matrix(CheckpointLayout.attention(l, 'q', "weight")),
                matrix(CheckpointLayout.attention(l, 'k', "weight")),
                matrix(CheckpointLayout.attention(l, 'v', "weight")),
                matrix(CheckpointLayout.attention(l, 'o', "weight")),
                bias ? tensor(CheckpointLayout.attention(l, 'q', "bias")) : null,
                bias ? tensor(CheckpointLayout.attention(l, 'k', "bias")) : null,
                bias ? tensor(CheckpointLayout.attention(l, 'v', "bias")) : null,
                config.attention_bias ? tensor(CheckpointLayout.attention(l, 'o', "bias")) : null,
                projectionNorm(l, 'q'), projectionNorm(l, 'k'), projectionNorm(l, 'v'),
                config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.slidingWindow(l),
                config.attention_sinks ? tensor(CheckpointLayout.attentionSinks(l)) : null);
    }

    /**
     * DeepSeek's MLA. The q_a and kv_a layernorms use eps 1e-6 (DeepseekV2/V3RMSNorm's default: the modules are
     * built without rms_norm_eps); the softmax scale is qk_head_dim^-½, with YaRN's mscale_all_dim factor.
     */
    private LatentAttention latentAttention(int l) {
        MlaConfig m = config.mla;
        boolean qLora = m.q_lora_rank() != null;
        boolean bias = config.attention_bias;
        LatentAttention.Weights w = new LatentAttention.Weights(
                qLora ? null : matrix(CheckpointLayout.attention(l, 'q', "weight")),
                qLora ? matrix(CheckpointLayout.attention(l, "q_a_proj", "weight")) : null,
                qLora && bias ? tensor(CheckpointLayout.attention(l, "q_a_proj", "bias")) : null,
                qLora ? new RmsNorm(tensor(CheckpointLayout.attention(l, "q_a_layernorm", "weight")), 1e-6) : null,
                qLora ? matrix(CheckpointLayout.attention(l, "q_b_proj", "weight")) : null,
                matrix(CheckpointLayout.attention(l, "kv_a_proj_with_mqa", "weight")),
                bias ? tensor(CheckpointLayout.attention(l, "kv_a_proj_with_mqa", "bias")) : null,
                new RmsNorm(tensor(CheckpointLayout.attention(l, "kv_a_layernorm", "weight")), 1e-6),
                matrix(CheckpointLayout.attention(l, "kv_b_proj", "weight")),
                matrix(CheckpointLayout.attention(l, 'o', "weight")),
                bias ? tensor(CheckpointLayout.attention(l, 'o', "bias")) : null);
        double scale = Math.pow(m.qk_head_dim(), -0.5);
        if (config.rope_scaling != null) {
            scale = config.rope_scaling.softmaxScale(scale);
        }
        return new LatentAttention(w, config.num_attention_heads, m.qk_nope_head_dim(), m.qk_rope_head_dim(),
                m.v_head_dim(), scale);
    }

    /** Qwen3's / OLMoE's q and k RMSNorm and OLMoE's clip_qkv on projection {@code proj} (q, k or v). */
    private ProjectionNorm projectionNorm(int l, char proj) {
        RmsNorm norm = config.qkNorm == ModelConfig.QkNorm.NONE || proj == 'v' ? null
                : new RmsNorm(tensor(CheckpointLayout.attentionNorm(l, proj)), config.rms_norm_eps);
        return norm == null && config.clip_qkv == null ? ProjectionNorm.IDENTITY
                : new ProjectionNorm(norm, config.clip_qkv);
    }

    private MoeBlock moeBlock(int l, GroupedGemm gemm, DeviceExperts.Placement placement) {
        Router router = new Router(tensor(layout.routerGate(l)),
                config.clamped_experts ? tensor(layout.routerBias(l)) : null,
                config.routing.scoreCorrectionBias()
                        ? tensors.readFloat(layout.scoreCorrectionBias(l)).castTo(DataType.DOUBLE).toDoubleVector()
                        : null);
        // gpt-oss's softmax over the top-K logits is the softmax rule with norm_topk_prob (see RoutingRule#softmaxTopK)
        RouterOptions options = RouterOptions.of(RoutingRule.of(config));
        SharedExpert shared = null;
        if (config.hasSharedExpert()) {
            SwiGluMlp mlp = new SwiGluMlp(
                    matrix(layout.sharedExpert(l, Projection.GATE)),
                    matrix(layout.sharedExpert(l, Projection.UP)),
                    matrix(layout.sharedExpert(l, Projection.DOWN)));
            shared = config.hasSharedExpertGate() ? new SharedExpert(mlp, tensor(CheckpointLayout.sharedExpertGate(l)))
                    : SharedExpert.ungated(mlp);
        }
        if (config.hasCpExperts()) {
            return new MoeBlock(router, options, new CpExperts(cpFactors(l, Projection.GATE),
                    cpFactors(l, Projection.UP), cpFactors(l, Projection.DOWN), gemm), shared);
        }
        if (config.hasTrExperts()) {
            return new MoeBlock(router, options, new TrExperts(trCores(l, Projection.GATE),
                    trCores(l, Projection.UP), trCores(l, Projection.DOWN), gemm), shared);
        }
        if (config.hasLowRankExperts()) {
            LowRankWeights weights = new LowRankWeights(
                    tensor(layout.sharedBase(l, Projection.GATE)),
                    tensor(layout.sharedBase(l, Projection.UP)),
                    tensor(layout.sharedBase(l, Projection.DOWN)),
                    new LowRankAdapters(
                            tensor(layout.stackedLoraA(l, Projection.GATE)), tensor(layout.stackedLoraB(l, Projection.GATE)),
                            tensor(layout.stackedLoraA(l, Projection.UP)), tensor(layout.stackedLoraB(l, Projection.UP)),
                            tensor(layout.stackedLoraA(l, Projection.DOWN)), tensor(layout.stackedLoraB(l, Projection.DOWN)),
                            1.0));
            if (config.clamped_experts) {
                weights = weights.withInterleavedBiases(tensor(FusedExperts.gateUpBias(l)),      // [E, 2I]
                        tensor(FusedExperts.downBias(l)));                                        // [E, D]
            }
            return new MoeBlock(router, options, new LowRankFactorised(weights, gemm), shared);
        }
        ExpertWeights experts = config.clamped_experts
                ? new ExpertWeights(experts(l, Projection.GATE), experts(l, Projection.UP), experts(l, Projection.DOWN),
                        expertBiases(l, Projection.GATE), expertBiases(l, Projection.UP),
                        expertBiases(l, Projection.DOWN), GatedActivation.CLAMPED_SWIGLU)
                : new ExpertWeights(experts(l, Projection.GATE), experts(l, Projection.UP),
                        experts(l, Projection.DOWN));
        DeviceExperts device = dataType == DataType.FLOAT ? placement.place(l, experts) : null;
        return new MoeBlock(router, options, device == null ? new FullExperts(experts, gemm)
                : new FullExperts(experts, gemm, owned.closing(device)), shared);
    }

    /** The CP factors of one projection of a CP-form layer (small: widened into the model's type). */
    private CpFactors cpFactors(int l, Projection p) {
        return new CpFactors(tensor(layout.cpFactor(l, p, CpFactor.EXPERTS)),      // [E, R]
                tensor(layout.cpFactor(l, p, CpFactor.IN)),                        // [in, R]
                tensor(layout.cpFactor(l, p, CpFactor.OUT)));                      // [out, R]
    }

    /** The TR cores of one projection of a TR-form layer (small: widened into the model's type). */
    private TrFactors trCores(int l, Projection p) {
        return new TrFactors(tensor(layout.trCore(l, p, TrCore.EXPERTS)),          // [R, E, R]
                tensor(layout.trCore(l, p, TrCore.IN)),                            // [R, in, R]
                tensor(layout.trCore(l, p, TrCore.OUT)));                          // [R, out, R]
    }

    /**
     * The E experts' weights [rows, cols] of one projection, each where {@link #matrix} finds it; MXFP4 experts (gpt-oss
     * as released) stay packed where they lie for a FLOAT model, decoded per tile by the products.
     */
    private WeightStack experts(int l, Projection p) {
        if (dataType == DataType.FLOAT && tensors instanceof FusedExperts fused
                && fused.isPacked(layout.expert(l, 0, p))) {
            List<Mxfp4> packed = new ArrayList<>(config.num_experts);
            for (int e = 0; e < config.num_experts; e++) {
                packed.add(fused.packed(layout.expert(l, e, p)));
            }
            return WeightStack.ofMxfp4(packed);
        }
        List<INDArray> perExpert = new ArrayList<>(config.num_experts);
        for (int e = 0; e < config.num_experts; e++) {
            perExpert.add(matrix(layout.expert(l, e, p)));
        }
        return WeightStack.of(perExpert);
    }

    /** gpt-oss: the E experts' biases of one projection, stacked [E, out] in the model's type. */
    private INDArray expertBiases(int l, Projection p) {
        List<INDArray> rows = new ArrayList<>(config.num_experts);
        for (int e = 0; e < config.num_experts; e++) {
            rows.add(tensors.readFloat(layout.expertBias(l, e, p)).castTo(dataType).reshape(1, -1));
        }
        return owned.add(Nd4j.concat(0, rows.toArray(new INDArray[0])));
    }

    /**
     * A weight matrix: for a FLOAT model in its stored type, over the checkpoint's memory map where there is one
     * (products widen it per tile; FP8 codes with their block scales are dequantized per tile); for a DOUBLE model
     * widened into memory.
     */
    private INDArray matrix(String name) {
        if (dataType == DataType.DOUBLE) {
            return tensor(name);
        }
        INDArray t = tensors.stored(name);
        return t.dataType() == DataType.DOUBLE ? owned.add(t.castTo(DataType.FLOAT)) : t;
    }

    /** A small tensor (norm, bias, router) widened into a new array of the model's type. */
    private INDArray tensor(String name) {
        INDArray t = tensors.readFloat(name);
        return owned.add(dataType == DataType.FLOAT ? t : t.castTo(dataType));
    }
}
