package org.sparkmoe.driver.merge;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.driver.CheckpointOutputOptions;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.adapter.MergedCheckpoint;
import org.sparkmoe.adapter.MumoeAdapter;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.model.ModelFolder;
import org.sparkmoe.driver.Paths;
import picocli.CommandLine.Command;
import org.sparkmoe.driver.ModelOption;
import org.sparkmoe.driver.PeftVersionOption;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.util.concurrent.Callable;

/** {@code sparkmoe merge}: a PEFT LoRA adapter merged into a model, written as a new Hugging Face checkpoint. No Spark job. */
@Command(name = "merge", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Merge a PEFT LoRA adapter into a model's expert weights and write a complete Hugging Face "
                + "checkpoint folder.",
                "Each targeted expert weight becomes W + (lora_alpha / r) · B · A and a trained router replaces the base "
                        + "router. Every tensor is written as float32; config.json and the tokenizer files come along. "
                        + "The folder appears only once complete."})
public final class MergeCommand implements Callable<Integer> {
    @Mixin
    ModelOption model;

    @Option(names = "--adapter", required = true, paramLabel = "DIR",
            description = "PEFT adapter folder (adapter_config.json, adapter_model.safetensors).")
    String adapter;

    @Mixin
    PeftVersionOption peftVersion;

    @Option(names = "--out", required = true, paramLabel = "DIR",
            description = "Output model folder; must not exist yet.")
    String out;

    @Mixin
    CheckpointOutputOptions output;

    @Option(names = "--layout", paramLabel = "per-expert|fused",
            description = "How the output stores its experts: one tensor per expert, or transformers 5's fused "
                    + "mlp.experts.gate_up_proj / down_proj. Default: the model's layout.")
    String layout;

    @Override
    public Integer call() {
        Configuration conf = new Configuration();
        Path modelDir = new Path(model.uri(conf));
        Path target = new Path(Paths.qualify(out, conf));
        ModelConfig config = ModelFolder.readConfig(modelDir, conf);
        Path adapterDir = new Path(Paths.qualify(adapter, conf));
        if (MumoeAdapter.isMumoe(adapterDir, conf)) {
            throw new IllegalArgumentException("merge --adapter " + adapter + ": " + MumoeAdapter.NOT_MERGEABLE);
        }
        PeftAdapter peft = PeftAdapter.read(adapterDir, conf, config, peftVersion.checked(adapter));
        MergedCheckpoint.write(modelDir, peft, target, conf,
                output.with(layout == null ? null : ExpertLayout.parse(layout)));
        System.err.println("merge: wrote " + target + " (r=" + peft.config().r() + ", lora_alpha="
                + peft.config().loraAlpha() + ", " + peft.config().targets().size() + " projections"
                + (peft.config().sharedExpert() ? " of the experts and the shared expert" : "")
                + (peft.config().trainRouter() ? " and routers" : "") + " merged)");
        return 0;
    }
}
