package org.sparkmoe.adapter;

/**
 * A PEFT adapter folder (adapter_config.json, adapter_model.safetensors) or a trainable state that does not
 * fit the model: the message is one line naming the file, key or field, what was expected and what was found.
 */
public class AdapterFormatException extends IllegalArgumentException {
    public AdapterFormatException(String message) {
        super(message);
    }
}
