"""One experiment point → its replicates' simulations (orchestration shared by `run` and
`capacity`; no file I/O).

`iter_replicates` simulates the replicates one at a time (so a caller can write and free each
replicate's tables before the next); `pool` turns their samples into the replicated summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustersim.config.load import resolved_config
from clustersim.config.schema import Experiment
from clustersim.jobs import ExecutorName, SimJob, SimResult, run_jobs
from clustersim.metrics.experiment import summarize_experiment
from clustersim.metrics.replicates import (
    ReplicateSample,
    pooled_summary,
    replicate_sample,
    replicate_seeds,
    replicates_block,
)
from clustersim.metrics.stability import pooled_stability
from clustersim.metrics.table import Table
from clustersim.results.writer import write_json, write_run
from clustersim.sim.engine import Build, BuildError, RunOutput, build, run_tables

ProgressCallback = Callable[[float], None]
# (label) → a context yielding the engine's progress callback (or None: no bar)
ProgressFactory = Callable[[str], AbstractContextManager[ProgressCallback | None]]


@dataclass
class Replicate:
    """One finished replicate: index, seed, its experiment (that seed) and outputs."""

    k: int
    seed: int
    exp: Experiment
    out: RunOutput
    summary: dict[str, Any]
    timeline: Table

    def sample(self) -> ReplicateSample:
        exp = self.exp
        return replicate_sample(self.summary, self.out.requests, exp.slo, exp.horizon.warmup_s)


def replicate_experiment(exp: Experiment, seed: int) -> Experiment:
    """The experiment of one replicate: that seed, `replicates: 1`."""
    return exp.model_copy(update={"seed": seed, "replicates": 1})


def iter_replicates(
    exp: Experiment, progress: ProgressFactory | None = None, built: Build | None = None
) -> Iterator[Replicate]:
    """Simulate the experiment's replicates in order (one plain run when replicates is 1)."""
    if built is None:
        built = build(exp)
    seeds = replicate_seeds(exp.seed, exp.replicates)
    for k, seed in enumerate(seeds):
        rexp = replicate_experiment(exp, seed) if exp.replicates > 1 else exp
        if progress is None:
            out = run_tables(rexp, None, built)
        else:
            label = exp.name if exp.replicates == 1 else f"{exp.name} #{k}"
            with progress(label) as callback:
                out = run_tables(rexp, callback, built)
        summary, timeline = summarize_experiment(rexp, out)
        yield Replicate(k, seed, rexp, out, summary, timeline)


def pool(exp: Experiment, samples: list[ReplicateSample]) -> dict[str, Any]:
    """The replicated summary: pooled keys, the `replicates` intervals, pooled stability."""
    if len(samples) == 1:
        return samples[0].summary
    pooled = pooled_summary(samples)
    pooled["replicates"] = replicates_block(
        [s.summary for s in samples], replicate_seeds(exp.seed, len(samples))
    )
    pooled["stability"] = pooled_stability([s.summary["stability"] for s in samples])
    return pooled


def simulate_pooled(exp: Experiment, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Every replicate of `exp`, pooled (tables freed as it goes)."""
    return pool(exp, [rep.sample() for rep in iter_replicates(exp, progress)])


def simulate_into(job: SimJob) -> SimResult:
    """Worker of a fanned-out `run` (jobs.run_jobs): simulate `job.exp` and write its
    run files into the existing directory `job.run_dir`; the summary comes back."""
    assert job.run_dir is not None
    out = run_tables(job.exp)
    summary, timeline = summarize_experiment(job.exp, out)
    write_run(Path(job.run_dir), resolved_config(job.exp), out, summary, timeline)
    return SimResult(job.label, summary)


@dataclass(frozen=True)
class SampleResult(SimResult):
    """A worker's replicate for pooling elsewhere: the summary and the latency samples."""

    sample: ReplicateSample | None = None


def sample_job(job: SimJob) -> SimResult:
    """Worker of a fanned-out pooled simulation (capacity probes): simulate, summarise, keep
    what pooling needs; no files."""
    out = run_tables(job.exp)
    summary, _ = summarize_experiment(job.exp, out)
    exp = job.exp
    sample = replicate_sample(summary, out.requests, exp.slo, exp.horizon.warmup_s)
    return SampleResult(job.label, summary, sample=sample)


def simulate_pooled_jobs(exp: Experiment, executor: ExecutorName, workers: int) -> dict[str, Any]:
    """simulate_pooled with the replicates as parallel jobs (local processes or Ray); the
    same pooled summary, since each replicate is simulated and sampled the same way."""
    seeds = replicate_seeds(exp.seed, exp.replicates)
    jobs = [
        SimJob(f"{exp.name} #{k}", replicate_experiment(exp, seed) if exp.replicates > 1 else exp)
        for k, seed in enumerate(seeds)
    ]
    done = run_jobs(jobs, executor, workers, quiet=True, work=sample_job)
    samples = []
    for i in range(len(jobs)):
        result = done[i]
        assert isinstance(result, SampleResult) and result.sample is not None, result.error
        samples.append(result.sample)
    return pool(exp, samples)


def simulate_job_pooled(job: SimJob) -> SimResult:
    """Planner worker for a replicated plan: the candidate's replicates, pooled (the summary
    carries the replicates' intervals). With `job.ci_rel_target`, replicates are added one at a
    time beyond `exp.replicates`, up to `job.max_replicates`, until every p99 the SLO bounds has
    a 95 % half-width within ci_rel_target × its mean (`interval_known`); the seeds are those
    of a run with that many replicates (SeedSequence children are prefix-stable). With
    `job.run_dir` (plan.keep_runs) each replicate's run goes to <run_dir>/replicate-<k>/ and the
    pooled summary.json to <run_dir>; BuildError → a failed result, as simulate_job."""
    exp = job.exp
    try:
        built = build(exp)
    except BuildError as err:
        return SimResult(job.label, None, " ".join(str(err).split()))
    run_dir = Path(job.run_dir) if job.run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=False)
    target = job.ci_rel_target
    least = max(exp.replicates, 2) if target else exp.replicates  # an interval needs two
    most = max(least, job.max_replicates) if target else exp.replicates
    seeds = replicate_seeds(exp.seed, most)
    samples: list[ReplicateSample] = []
    for k, seed in enumerate(seeds):
        rexp = replicate_experiment(exp, seed)
        out = run_tables(rexp, None, built)
        summary, timeline = summarize_experiment(rexp, out)
        if run_dir is not None:
            rdir = run_dir / f"replicate-{k}"
            rdir.mkdir()
            write_run(rdir, resolved_config(rexp), out, summary, timeline)
        samples.append(replicate_sample(summary, out.requests, exp.slo, exp.horizon.warmup_s))
        del out
        if len(samples) < least:
            continue
        if job.ci_rel_target is None or interval_known(samples, exp, job.ci_rel_target):
            break
    summary = pool(exp, samples)
    if run_dir is not None:
        write_json(run_dir / "summary.json", summary)
    return SimResult(job.label, summary)


def interval_known(samples: list[ReplicateSample], exp: Experiment, rel: float) -> bool:
    """Every p99 the SLO bounds (TTFT, TPOT, e2e) has a 95 % interval of half-width <=
    rel × its mean (a p99 never measured, e.g. TPOT of 1-token outputs, does not count)."""
    block = replicates_block([s.summary for s in samples], [0] * len(samples))
    for metric, bound in (("ttft_s", exp.slo.ttft_p99_s), ("tpot_s", exp.slo.tpot_p99_s),
                          ("e2e_s", exp.slo.e2e_p99_s)):  # fmt: skip
        if bound is None:
            continue
        stat = block[metric]["p99"]
        if stat["mean"] is None:
            continue
        if stat["ci95"] is None:
            return False
        if (stat["ci95"][1] - stat["ci95"][0]) / 2.0 > rel * abs(stat["mean"]):
            return False
    return True
