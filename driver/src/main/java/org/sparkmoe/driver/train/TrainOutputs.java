package org.sparkmoe.driver.train;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.adapter.MergedCheckpoint;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.surgery.SurgeryCheckpoint;
import org.sparkmoe.train.TrainState;
import org.sparkmoe.train.TrainStateFile;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Everything a train run writes under --out, through the Hadoop FileSystem API and each file atomically:
 * <pre>
 *   train-log.jsonl                     one line per round (rewritten after every round)
 *   checkpoints/round-NNNNNN/           state.safetensors (LoRA, router, AdamW moments, step) + train-log.jsonl
 *   checkpoints/latest                  the name of the newest complete checkpoint (written last)
 *   adapter/                            the PEFT adapter
 *   merged/                             with --merge: the HF checkpoint with the LoRA merged in
 *   model/                              instead of both, for a low-rank model (surgery lowrank): the same
 *                                       low-rank checkpoint format with the trained stacked LoRA experts
 * </pre>
 */
public final class TrainOutputs {
    public static final String LOG = "train-log.jsonl";
    static final String CHECKPOINTS = "checkpoints";
    static final String LATEST = "latest";
    static final String STATE = "state.safetensors";
    public static final String ADAPTER = "adapter";
    static final String MERGED = "merged";
    static final String MODEL = "model";
    private static final String ROUND = "round";
    private static final String SIGNATURE = "signature";

    private final TrainPlan plan;
    private final Configuration conf;
    private final FileSystem fs;
    private final Path out;
    private final List<String> log = new ArrayList<>();

    public TrainOutputs(TrainPlan plan, Configuration conf) {
        this.plan = plan;
        this.conf = conf;
        this.out = new Path(plan.out());
        try {
            this.fs = out.getFileSystem(conf);
        } catch (IOException e) {
            throw new UncheckedIOException("opening the file system of --out " + out + ": " + e.getMessage(), e);
        }
    }

    /** Where a resumed run starts: the checkpointed state and the first round still to run. */
    record Resume(TrainState state, long nextRound) {
    }

    /** A fresh run must not write over another run's outputs. */
    void requireFresh() {
        if (exists(out) && list(out).length > 0) {
            throw new IllegalArgumentException("--out " + out + " already holds files; pass --resume to continue the "
                    + "run there, or choose another folder");
        }
    }

    /** Reads the latest checkpoint; throws naming the flag that differs if it came from another configuration. */
    Resume resume() {
        Path latest = new Path(new Path(out, CHECKPOINTS), LATEST);
        if (!exists(latest)) {
            throw new IllegalArgumentException("--resume: no checkpoint under " + new Path(out, CHECKPOINTS));
        }
        Path dir = new Path(new Path(out, CHECKPOINTS), read(latest).trim());
        TrainStateFile.Loaded loaded = TrainStateFile.read(fs, new Path(dir, STATE));
        Map<String, String> meta = loaded.metadata();
        String signature = meta.get(SIGNATURE);
        if (!plan.resumeSignature().equals(signature)) {
            throw new IllegalArgumentException("--resume: the checkpoint in " + dir + " was written by a run with "
                    + signature + "; this run has " + plan.resumeSignature());
        }
        String lines = read(new Path(dir, LOG));
        lines.lines().filter(l -> !l.isBlank()).forEach(log::add);
        return new Resume(loaded.state(), Long.parseLong(meta.get(ROUND)) + 1);
    }

    /** Logs the round; checkpoints every --checkpoint-every rounds and after the last. */
    public void roundDone(RoundLog round, TrainState state) {
        log.add(round.toJson());
        AtomicFile.write(fs, new Path(out, LOG), logBytes());
        if ((round.round() + 1) % plan.checkpointEvery() == 0 || round.round() + 1 == plan.roundCount()) {
            checkpoint(round.round(), state);
        }
    }

    private void checkpoint(long round, TrainState state) {
        Path checkpoints = new Path(out, CHECKPOINTS);
        Path latest = new Path(checkpoints, LATEST);
        String previous = exists(latest) ? read(latest).trim() : null;
        String name = String.format(Locale.ROOT, "round-%06d", round);
        Path dir = new Path(checkpoints, name);
        TrainStateFile.write(fs, new Path(dir, STATE), state,
                Map.of(ROUND, Long.toString(round), SIGNATURE, plan.resumeSignature()));
        AtomicFile.write(fs, new Path(dir, LOG), logBytes());
        AtomicFile.write(fs, latest, name.getBytes(StandardCharsets.UTF_8));
        if (previous != null && !previous.equals(name)) {
            delete(new Path(checkpoints, previous));
        }
    }

    /**
     * Writes the PEFT adapter and, with --merge, the merged checkpoint (for a low-rank model: the checkpoint with the
     * trained experts, and router when trained, in OUT/model); returns the folders written.
     */
    public List<Path> finish(ModelConfig model, TrainState state) {
        if (model.hasLowRankExperts()) {
            Path dir = new Path(out, MODEL);
            SurgeryCheckpoint.write(new Path(plan.model()), model.jsonCopy(), state.params(), Map.of(), dir, conf);
            return List.of(new Path(out, LOG), dir);
        }
        PeftAdapter adapter = PeftAdapter.of(model, plan.adapterConfig(), state.params());
        Path adapterDir = new Path(out, ADAPTER);
        adapter.write(adapterDir, conf);
        List<Path> written = new ArrayList<>(List.of(new Path(out, LOG), adapterDir));
        if (plan.merge()) {
            Path merged = new Path(out, MERGED);
            MergedCheckpoint.write(new Path(plan.model()), adapter, merged, conf, MergedCheckpoint.DEFAULT_SHARD_BYTES);
            written.add(merged);
        }
        return written;
    }

    private byte[] logBytes() {
        StringBuilder text = new StringBuilder();
        log.forEach(line -> text.append(line).append('\n'));
        return text.toString().getBytes(StandardCharsets.UTF_8);
    }

    private boolean exists(Path p) {
        try {
            return fs.exists(p);
        } catch (IOException e) {
            throw new UncheckedIOException("looking up " + p + ": " + e.getMessage(), e);
        }
    }

    private FileStatus[] list(Path p) {
        try {
            return fs.listStatus(p);
        } catch (IOException e) {
            throw new UncheckedIOException("listing " + p + ": " + e.getMessage(), e);
        }
    }

    private String read(Path p) {
        try (var in = fs.open(p)) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + p + ": " + e.getMessage(), e);
        }
    }

    private void delete(Path p) {
        try {
            fs.delete(p, true);
        } catch (IOException e) {
            throw new UncheckedIOException("deleting the superseded checkpoint " + p + ": " + e.getMessage(), e);
        }
    }
}
