package org.sparkmoe.model;

import org.sparkmoe.io.DType;
import org.sparkmoe.io.ExpertLayout;

/**
 * How a command writes a checkpoint folder (--layout, --max-shard-size, --dtype of surgery, merge and
 * retrain-router).
 *
 * @param layout        how the experts are stored; null keeps the input checkpoint's
 * @param maxShardBytes the largest safetensors shard (bigger checkpoints get an index)
 * @param dtype         what every tensor is written as; null keeps the input's (see {@link CheckpointFolderWriter})
 */
public record CheckpointOptions(ExpertLayout layout, long maxShardBytes, DType dtype) {
    /** The input's layout and dtype, 5 GB shards (transformers' save_pretrained). */
    public static final CheckpointOptions DEFAULT =
            new CheckpointOptions(null, CheckpointFolderWriter.DEFAULT_SHARD_BYTES, null);

    public CheckpointOptions {
        if (maxShardBytes < 1) {
            throw new IllegalArgumentException("--max-shard-size must be at least 1 byte, got " + maxShardBytes);
        }
    }
}
