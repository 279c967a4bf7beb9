#!/usr/bin/env python3
"""Where a profiled sparkmoe run's Spark tasks spent their CPU time, from async-profiler's collapsed stacks.

    python3 deploy/bench/profile_summary.py OUT.collapsed

Every sample of a Spark task thread (a stack through Executor$TaskRunner.run) goes to one class: libnd4j allocating
a buffer (Nd4jCpu.allocateDataBuffer: its zero-fill and the page faults under it), other libnd4j calls, SparkMoE's
Java code (kernels, model), the rest. Stacks that start in OpenBLAS (built without frame pointers, so the unwinder
loses the task's Java frames above it) are the tasks' GEMMs. Samples of other threads are split into the JIT
compilers, the garbage collector and everything else.
"""
import collections
import sys


def classify(frames):
    if not any("TaskRunner.run" in f for f in frames):
        if "openblas" in frames[0].lower():
            return "task: BLAS (its GEMMs; the unwinder loses their Java callers)"
        if any("Compile" in f for f in frames):
            return "not in a task: JIT compilers"
        if any("GC" in f or "G1" in f for f in frames):
            return "not in a task: garbage collector"
        return "not in a task: other (Spark's threads, the JVM's)"
    if any("allocateDataBuffer" in f for f in frames):
        return "task: libnd4j allocation (zero-fill, page faults)"
    if any("Nd4jCpu" in f or "openblas" in f.lower() for f in frames):
        return "task: libnd4j and BLAS calls"
    if any("org/sparkmoe" in f or "org.sparkmoe" in f for f in frames):
        return "task: SparkMoE Java code"
    return "task: other"


def main(path):
    classes = collections.Counter()
    alloc_sites = collections.Counter()
    java_leaves = collections.Counter()
    for line in open(path):
        stack, count = line.rstrip("\n").rsplit(" ", 1)
        frames = stack.split(";")
        n = int(count)
        kind = classify(frames)
        classes[kind] += n
        if kind.startswith("task: libnd4j allocation"):
            ours = [f for f in frames if "sparkmoe" in f]
            alloc_sites[ours[-1] if ours else "?"] += n
        elif kind == "task: SparkMoE Java code":
            java_leaves[frames[-1]] += n
    total = sum(classes.values())
    tasks = sum(n for k, n in classes.items() if k.startswith("task"))
    print(f"{total} samples, {tasks} in Spark tasks")
    for kind, n in classes.most_common():
        share = f"{100 * n / tasks:.1f}% of the tasks'" if kind.startswith("task") else f"{100 * n / total:.1f}% of all"
        print(f"{n:8d}  {share:>22}  {kind}")
    print("allocation sites (the innermost SparkMoE frame):")
    for site, n in alloc_sites.most_common(10):
        print(f"{n:8d}  {site}")
    print("SparkMoE code, innermost frames:")
    for leaf, n in java_leaves.most_common(10):
        print(f"{n:8d}  {leaf}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
