package org.sparkmoe.driver.train;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparkmoe.model.CheckpointOptions;
import org.sparkmoe.adapter.MergedCheckpoint;
import org.sparkmoe.adapter.MumoeAdapter;
import org.sparkmoe.adapter.MumoeConfig;
import org.sparkmoe.io.ExpertLayout;
import org.sparkmoe.driver.OutputLock;
import org.sparkmoe.adapter.PeftAdapter;
import org.sparkmoe.io.AtomicFile;
import org.sparkmoe.io.Checkpoint;
import org.sparkmoe.io.ModelConfig;
import org.sparkmoe.surgery.SurgeryCheckpoint;
import org.sparkmoe.train.TrainState;
import org.sparkmoe.train.TrainStateFile;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;

/**
 * Everything a train run writes under --out, through the Hadoop FileSystem API and each file atomically:
 * <pre>
 *   train-log.jsonl                     one line per round (rewritten at most once a second, at every checkpoint
 *                                       and when the run stops)
 *   checkpoints/round-NNNNNN/           state.safetensors (LoRA, router, AdamW moments, step) + train-log.jsonl
 *                                       + SHA256SUMS (sha256sum format, written after both: the round is complete)
 *   checkpoints/latest                  the name of the newest complete checkpoint (written last)
 *   .sparkmoe.lock                      while a run writes here (driver.OutputLock)
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
    static final String CHECKSUMS = "SHA256SUMS";
    public static final String ADAPTER = "adapter";
    static final String MERGED = "merged";
    static final String MODEL = "model";
    private static final String ROUND = "round";
    private static final String SIGNATURE = "signature";
    /** The longest train-log.jsonl lags behind the rounds done while a run goes on. */
    private static final long LOG_INTERVAL_NANOS = 1_000_000_000L;

    private final TrainPlan plan;
    private final Configuration conf;
    private final FileSystem fs;
    private final Path out;
    private final List<String> log = new ArrayList<>();
    /** Rounds in {@link #log} since train-log.jsonl was last written. */
    private int unwritten;
    /** When train-log.jsonl was last written ({@link System#nanoTime}); 0: not yet. */
    private long logWrittenAt;

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

    /** Removes what writes killed before their rename left behind; call while holding the folder's lock. */
    void removeStaleTemporaries() {
        for (Path dir : List.of(out, new Path(out, CHECKPOINTS))) {
            for (Path removed : AtomicFile.removeStaleTemporaries(fs, dir)) {
                System.err.println("train: removed " + removed + ", left by a write that was cut off");
            }
        }
    }

    /** A fresh run must not write over another run's outputs (its lock aside). */
    void requireFresh() {
        if (exists(out) && Arrays.stream(list(out)).anyMatch(f -> !f.getPath().getName().equals(OutputLock.FILE))) {
            throw new IllegalArgumentException("--out " + out + " already holds files; pass --resume to continue the "
                    + "run there, or choose another folder");
        }
    }

    /**
     * The checkpoint to resume from: the one {@code latest} names when it is complete, else the newest complete one
     * (saying so on stderr); null when there is none (a run cut off before its first checkpoint: the caller starts
     * afresh). Throws naming the file when a checkpoint's bytes differ from its SHA256SUMS, and naming the flag that
     * differs when it came from another configuration.
     */
    Resume resume() {
        Path checkpoints = new Path(out, CHECKPOINTS);
        Path latest = new Path(checkpoints, LATEST);
        String pointed = exists(latest) ? read(latest).trim() : null;
        String chosen = pointed != null && complete(new Path(checkpoints, pointed)) ? pointed : newestComplete();
        if (chosen == null) {
            return null;
        }
        if (!chosen.equals(pointed)) {
            System.err.println("train: --resume: " + (pointed == null ? "checkpoints/latest is missing"
                    : "checkpoints/latest names " + pointed + ", which is not complete") + "; resuming from "
                    + chosen + ", the newest complete checkpoint");
        }
        Path dir = new Path(checkpoints, chosen);
        verify(dir);
        TrainStateFile.Loaded loaded = TrainStateFile.read(fs, new Path(dir, STATE));
        Map<String, String> meta = loaded.metadata();
        String signature = meta.get(SIGNATURE);
        if (!plan.resumeSignature().equals(signature)) {
            throw new IllegalArgumentException(signatureMismatch(dir, signature, plan.resumeSignature()));
        }
        String lines = read(new Path(dir, LOG));
        lines.lines().filter(l -> !l.isBlank()).forEach(log::add);
        return new Resume(loaded.state(), Long.parseLong(meta.get(ROUND)) + 1);
    }

    /**
     * Names the first option whose value differs between a checkpoint's signature and this run's (both written by
     * {@link TrainPlan#resumeSignature}): "--resume: the checkpoint in DIR was written with --rank=4; this run has
     * --rank=8". Falls back to both signatures when they cannot be compared key by key.
     */
    static String signatureMismatch(Path dir, String written, String current) {
        Map<String, String> before = TrainPlan.parseSignature(written == null ? "" : written);
        Map<String, String> now = TrainPlan.parseSignature(current);
        for (Map.Entry<String, String> option : now.entrySet()) {
            String was = before.get(option.getKey());
            if (!option.getValue().equals(was)) {
                return "--resume: the checkpoint in " + dir + " was written " + (was == null ? "without --"
                        + option.getKey() + " in its options (an earlier version)" : "with --" + option.getKey() + "="
                        + was) + "; this run has --" + option.getKey() + "=" + option.getValue()
                        + " (resume with the checkpoint's options, or start a new run in another --out)";
            }
        }
        for (Map.Entry<String, String> option : before.entrySet()) {
            if (!now.containsKey(option.getKey())) {
                return "--resume: the checkpoint in " + dir + " was written with --" + option.getKey() + "="
                        + option.getValue() + "; this run does not set --" + option.getKey() + " (resume with the "
                        + "checkpoint's options, or start a new run in another --out)";
            }
        }
        return "--resume: the checkpoint in " + dir + " was written by a run with " + written + "; this run has "
                + current;
    }

    /** Deletes what a run cut off before its first checkpoint wrote (the log, partial checkpoints). */
    void clearUncheckpointed() {
        for (Path p : List.of(new Path(out, LOG), new Path(out, CHECKPOINTS))) {
            try {
                fs.delete(p, true);
            } catch (IOException e) {
                throw new UncheckedIOException("deleting " + p + ": " + e.getMessage(), e);
            }
        }
    }

    /** A round folder holding its state and log, and their checksums (or, from an earlier version, no checksums). */
    private boolean complete(Path dir) {
        return exists(new Path(dir, STATE)) && exists(new Path(dir, LOG));
    }

    private String newestComplete() {
        Path checkpoints = new Path(out, CHECKPOINTS);
        if (!exists(checkpoints)) {
            return null;
        }
        return Arrays.stream(list(checkpoints)).map(f -> f.getPath().getName())
                .filter(n -> n.matches("round-\\d{6}") && complete(new Path(checkpoints, n))
                        && exists(new Path(new Path(checkpoints, n), CHECKSUMS)))
                .max(String::compareTo).orElse(null);
    }

    /** Compares the state and log with the round's SHA256SUMS; a checkpoint from before checksums passes as it is. */
    private void verify(Path dir) {
        Path sums = new Path(dir, CHECKSUMS);
        if (!exists(sums)) {
            return;
        }
        for (String line : read(sums).lines().filter(l -> !l.isBlank()).toList()) {
            String[] f = line.split("  ", 2);
            Path file = new Path(dir, f[1]);
            String actual = sha256(file);
            if (!actual.equals(f[0])) {
                throw new IllegalArgumentException("--resume: checkpoint file " + file + " is damaged: its sha256 is "
                        + actual + ", " + CHECKSUMS + " records " + f[0] + "; restore it, or start a new run in "
                        + "another --out");
            }
        }
    }

    private String sha256(Path file) {
        try (var in = fs.open(file)) {
            MessageDigest digest = MessageDigest.getInstance("SHA-256");
            byte[] buffer = new byte[1 << 16];
            for (int n; (n = in.read(buffer)) > 0; ) {
                digest.update(buffer, 0, n);
            }
            return HexFormat.of().formatHex(digest.digest());
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + file + ": " + e.getMessage(), e);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JVM has no SHA-256", e);
        }
    }

    /**
     * Logs the round; checkpoints every --checkpoint-every rounds and after the last, reading the state only then
     * (it stays on the executors in the other rounds). train-log.jsonl is rewritten with the round when it was last
     * written a second or more ago and at a checkpoint: a rewrite costs 11–19 ms on a local disk, 2–4% of a
     * small model's round (docs/benchmarks.md); {@link #writeLog} writes the rest when a run stops between.
     */
    public void roundDone(RoundLog round, Supplier<TrainState> state) {
        log.add(round.toJson());
        unwritten++;
        boolean checkpoint = (round.round() + 1) % plan.checkpointEvery() == 0
                || round.round() + 1 == plan.roundCount();
        if (checkpoint || logWrittenAt == 0 || System.nanoTime() - logWrittenAt >= LOG_INTERVAL_NANOS) {
            writeLog();
        }
        if (checkpoint) {
            checkpoint(round.round(), state.get());
        }
    }

    /** Writes train-log.jsonl with every round logged so far, unless it holds them already. */
    public void writeLog() {
        if (unwritten > 0) {
            AtomicFile.write(fs, new Path(out, LOG), logBytes());
            unwritten = 0;
            logWrittenAt = System.nanoTime();
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
        String sums = sha256(new Path(dir, STATE)) + "  " + STATE + "\n" + sha256(new Path(dir, LOG)) + "  " + LOG + "\n";
        AtomicFile.write(fs, new Path(dir, CHECKSUMS), sums.getBytes(StandardCharsets.UTF_8));
        AtomicFile.write(fs, latest, name.getBytes(StandardCharsets.UTF_8));
        if (previous != null && !previous.equals(name)) {
            delete(new Path(checkpoints, previous));
        }
    }

    /**
     * Writes the PEFT adapter in {@code adapterFormat} (--adapter-format) and, with --merge, the merged checkpoint (for
     * a low-rank model: the checkpoint with the trained experts, and router when trained, in OUT/model); returns the
     * folders written. The adapter names {@code baseModelName} as its base model.
     */
    public List<Path> finish(ModelConfig model, TrainState state, ExpertLayout adapterFormat, String baseModelName) {
        MumoeConfig mumoe = plan.loraSpec().mumoe();
        if (model.hasLowRankExperts() && mumoe == null) {
            Path dir = new Path(out, MODEL);
            SurgeryCheckpoint.write(new Path(plan.model()), model.jsonCopy(), state.params(), Map.of(), dir, conf);
            return List.of(new Path(out, LOG), dir);
        }
        if (mumoe != null) {
            Path adapterDir = new Path(out, ADAPTER);
            new MumoeAdapter(mumoe, state.params()).write(adapterDir, conf, model, baseModelName);
            return List.of(new Path(out, LOG), adapterDir);
        }
        PeftAdapter adapter;
        try (Checkpoint base = Checkpoint.open(new Path(plan.model()), conf)) {
            adapter = PeftAdapter.of(model, plan.adapterConfig(baseModelName), state.params()).withRouterBiases(base);
        }
        Path adapterDir = new Path(out, ADAPTER);
        adapter.write(adapterDir, conf, adapterFormat);
        List<Path> written = new ArrayList<>(List.of(new Path(out, LOG), adapterDir));
        if (plan.merge()) {
            Path merged = new Path(out, MERGED);
            MergedCheckpoint.write(new Path(plan.model()), adapter, merged, conf, CheckpointOptions.DEFAULT);
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
