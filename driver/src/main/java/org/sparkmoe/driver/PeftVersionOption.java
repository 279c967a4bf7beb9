package org.sparkmoe.driver;

import org.sparkmoe.adapter.FusedAdapterFormat;
import picocli.CommandLine.Option;

/** {@code --peft-version V}, shared by every command that reads a PEFT adapter (eval, logits, merge). */
public final class PeftVersionOption {
    @Option(names = "--peft-version", paramLabel = "V",
            description = "The PEFT release that saved a fused-expert adapter (target_parameters on "
                    + "mlp.experts.gate_up_proj / down_proj), e.g. 0.19.0 or 0.21.0: it says which shapes the LoRA "
                    + "tensors have (PEFT changed them in 0.19.1) where the shapes alone cannot tell (gate_up_proj "
                    + "with hidden_size = 2 x the expert intermediate size, down_proj with the two equal; such an "
                    + "adapter is refused without a version). Takes the place of adapter_config.json's "
                    + "peft_version. No effect on a per-expert adapter. Default: adapter_config.json's peft_version, "
                    + "else the shapes.")
    public String peftVersion;

    /** The checked --peft-version (null when not given), for an adapter at {@code adapter} (null when none). */
    public String checked(String adapter) {
        check(peftVersion, adapter);
        return peftVersion;
    }

    /** Throws in one line when {@code peftVersion} is no PEFT version, or is given without an adapter. */
    public static void check(String peftVersion, String adapter) {
        if (peftVersion == null) {
            return;
        }
        if (adapter == null) {
            throw new IllegalArgumentException("--peft-version " + peftVersion + " needs --adapter (it says which "
                    + "PEFT saved the adapter)");
        }
        FusedAdapterFormat.generationOf(peftVersion, "--peft-version");
    }
}
