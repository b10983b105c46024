"""Sequential classification by independent driven outputs: sample only the contenders.

A ``QuantumNeuronLayer`` in decision mode needs each input's top output, not every
activity to the same precision. After a first block of sweeps most outputs of an input are
far behind its top (:func:`~qnn_torch.functional.layer.contested`), and only the top and
its few contenders decide the answer. Outputs without links are independent neurons, so
leaving some out changes nothing for the others: each output's chains stay exact Markov
chains of its own distribution (each phase draws a new random stream; a local move's
proposal width restarts from its default).
:func:`sequential_top` therefore re-lays the batch out between phases, keeping only the
contested outputs of the undecided inputs, and stops each input once its top is the only
output contested, or at ``config.max_sweeps``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from qnn_torch.config import SamplerConfig
from qnn_torch.functional.layer import contested
from qnn_torch.functional.observables import chain_mean_and_error
from qnn_torch.functional.physics import validate_non_negative
from qnn_torch.network import CompiledNetwork, independent_outputs
from qnn_torch.simulate import run_sampler

# Run g of phase p draws the stream seed + (64·p + g)·_SEED_STEP mod 2**63: a new one each.
_SEED_STEP = 0x9E3779B97F4A7C15

EVALUATION_CONFIG = SamplerConfig(
    chains=64, thermalization=0, sweeps=1, max_sweeps=75, init="equilibrium"
)
"""Decision mode as the MNIST job evaluates: 64 chains from equilibrium starts, a first block
of 1 sweep, at most 75. Many short chains: the margin's error then has 63 degrees of
freedom, where with 8 chains' 7 a near tie was decided for the wrong output in 8–24 % of
its decisions, whichever bar (docs/sampler.md, "Decision mode")."""


@dataclass(frozen=True)
class SequentialResult:
    """Shapes (B inputs, O outputs): activity, stderr (B, O) float64 (each output over the
    sweeps it was measured for; +inf where chains were stuck); sweeps (B,) int64, the
    measurement sweeps of each input's top output; output_sweeps (B,) int64, the sweeps
    summed over the input's outputs (the cost, without the padding copies)."""

    activity: Tensor
    stderr: Tensor
    sweeps: Tensor
    output_sweeps: Tensor


@dataclass
class _Tallies:
    """What :func:`sequential_top` has measured: per input b, chain c and output j the sum
    of the samples, sums (B, C, O) float64; the sweeps of each output, counts (B, O); stuck
    chains, stuck (B, O); the last paths (B, C, O, Nt), None before the first phase."""

    sums: Tensor
    counts: Tensor
    stuck: Tensor
    paths: Tensor | None

    def chain_means(self) -> Tensor:
        """Each chain's mean of each output over its measured sweeps, (B, C, O)."""
        return self.sums / self.counts.clamp_min(1)[:, None, :]

    def run(
        self,
        network: CompiledNetwork,
        config: SamplerConfig,
        rows: Tensor,
        index: Tensor,
        valid: Tensor,
    ) -> None:
        """Sample the outputs ``index`` (b, K) of inputs ``rows`` (b,), continuing their
        chains, and add the results of the ``valid`` slots (b, K) (padding repeats a
        contender, which must count once)."""
        initial = None
        if self.paths is not None:
            initial = self.paths[rows[:, None], :, index].transpose(1, 2)  # (b, C, K, Nt)
        out = run_sampler(network, config, initial_paths=initial)
        target_rows = rows[:, None].expand_as(index)[valid]
        target_outputs = index[valid]
        chain_means = out.chain_activity.transpose(1, 2)[valid]  # (v, C), float64
        self.sums[target_rows, :, target_outputs] += chain_means * config.sweeps
        self.counts[target_rows, target_outputs] += config.sweeps
        self.stuck[target_rows, target_outputs] |= out.stderr.isinf()[valid]
        if self.paths is None:  # the first phase, every output of every input in order
            self.paths = out.paths  # the run's own tensor: copying it would only cost time
        else:
            self.paths[target_rows, :, target_outputs] = out.paths.transpose(1, 2)[valid]

    def contenders(
        self, rows: Tensor, drive: Tensor, measured: int, cap: int, sigmas: float
    ) -> tuple[list[tuple[Tensor, Tensor]], list[Tensor]]:
        """Groups of the undecided ``rows`` (drives (b, O)) by their number of contested
        outputs (2, 3–4, 5–8, ...), each as (rows, outputs padded to the group's widest),
        and the slots that are real. The contenders are judged against the leader, the
        output of the largest mean so far; outputs left behind earlier (fewer than
        ``measured`` sweeps) stay out unless one of them leads again, which brings it back
        from its last paths. Outputs of the leader's drive tied with it to the last bit go
        on with it, to stay identical. The look comes after ``measured`` of the ``cap``
        sweeps, which raises its bar (``information`` of :func:`contested`)."""
        chains = self.chain_means()[rows]
        leader = chains.mean(1).argmax(-1, keepdim=True)
        current = (self.counts[rows] == measured).scatter(-1, leader, True)
        error = torch.where(self.stuck[rows], torch.inf, 1.0)
        alive = contested(
            chains, error, sigmas, valid=current, drive=drive, information=measured / cap
        )
        keep = alive.sum(-1) > 1
        leader_chains = chains.gather(-1, leader[:, None, :].expand(-1, chains.shape[1], -1))
        alive |= (chains == leader_chains).all(1) & (drive == drive.gather(-1, leader)) & current
        rows, alive = rows[keep], alive[keep]
        width = alive.sum(-1)
        bucket = torch.ceil(torch.log2(width.double())).long()
        groups, valids = [], []
        for b in bucket.unique().tolist():
            members = bucket == b
            widest = int(width[members].max())
            order = torch.sort(alive[members].float(), dim=-1, descending=True, stable=True)
            order = order.indices[:, :widest]
            valid = alive[members].gather(-1, order)
            groups.append((rows[members], torch.where(valid, order, order[:, :1])))
            valids.append(valid)
        return groups, valids


def sequential_top(
    drive: Tensor, profile: Tensor, activity_norm: float, config: SamplerConfig, sigmas: float
) -> SequentialResult:
    """Measure the outputs of independent driven neurons until each input's top is decided.

    ``drive`` (B, O) holds the drive amplitudes of B inputs' O unlinked outputs. Phase 0
    thermalises every output (``config.thermalization`` sweeps from ``config.init``) and
    measures one block of ``config.sweeps``; phase p ≥ 1 measures 2^(p−1) blocks (the
    last one cut at ``config.max_sweeps``). After each phase, judged on all its sweeps so
    far, an input whose top alone is :func:`~qnn_torch.functional.layer.contested` at
    ``sigmas`` stops, and an undecided one keeps only its contested outputs, in groups of
    inputs with similar counts (each padded to its widest input with copies of a
    contender, whose results are dropped); each output continues its chains from its last
    paths, and the outputs of a row share their random numbers, as in one run. Judging
    only at the ends of phases, whose lengths double, keeps the number of looks, each a
    chance of a false decision, logarithmic in ``max_sweeps``; a look after n of the
    ``max_sweeps`` sweeps also raises the bar by (n/``max_sweeps``)^(−1/4), where a near
    tie's gap is the smallest fraction of its error. ``config.target_stderr``
    plays no part. ValueError for a ``drive`` that is not (B, O) or not finite and ≥ 0,
    ``sigmas`` ≤ 0, or ``config.max_sweeps`` ≤ ``config.sweeps``.
    """
    if not isinstance(drive, Tensor) or drive.dim() != 2 or drive.shape[1] < 1:
        shape = tuple(drive.shape) if isinstance(drive, Tensor) else type(drive).__name__
        raise ValueError(f"drive must be a tensor of shape (inputs, outputs), got {shape}")
    validate_non_negative("drive", drive)
    if not (isinstance(sigmas, int | float) and math.isfinite(sigmas) and sigmas > 0):
        raise ValueError(f"sigmas must be a finite number > 0, got {sigmas!r}")
    if config.max_sweeps <= config.sweeps:
        raise ValueError(
            f"config.max_sweeps must exceed config.sweeps={config.sweeps} (the first block), "
            f"got {config.max_sweeps}"
        )
    B, O = drive.shape
    C, block, cap = config.chains, config.sweeps, config.max_sweeps
    device = drive.device
    state = _Tallies(
        sums=torch.zeros(B, C, O, dtype=torch.float64, device=device),
        counts=torch.zeros(B, O, dtype=torch.int64, device=device),
        stuck=torch.zeros(B, O, dtype=torch.bool, device=device),
        paths=None,
    )
    # Groups of inputs still measuring: their rows (b,), outputs (b, K) padded with a copy
    # of a contender, and which slots are real (b, K).
    groups = [(torch.arange(B, device=device), torch.arange(O, device=device).expand(B, O))]
    valids = [torch.ones(B, O, dtype=torch.bool, device=device)]
    phase, measured = 0, 0
    while groups and measured < cap:
        length = min(block * 2 ** max(phase - 1, 0), cap - measured)
        for g, ((rows, index), valid) in enumerate(zip(groups, valids, strict=True)):
            seed = (config.seed + (64 * phase + g) * _SEED_STEP) % 2**63
            phase_config = dataclasses.replace(
                config,
                thermalization=config.thermalization if phase == 0 else 0,
                sweeps=length,
                max_sweeps=0,
                target_stderr=0.0,
                seed=seed,
            )
            network = independent_outputs(drive[rows[:, None], index], profile, activity_norm)
            state.run(network, phase_config, rows, index, valid)
        measured += length
        if measured >= cap:
            break
        remaining = torch.cat([rows for rows, _ in groups])
        groups, valids = state.contenders(remaining, drive[remaining], measured, cap, sigmas)
        phase += 1
    mean, stderr = chain_mean_and_error(state.chain_means(), dim=1)
    return SequentialResult(
        activity=mean,
        stderr=stderr.masked_fill(state.stuck, torch.inf),
        sweeps=state.counts.max(-1).values,
        output_sweeps=state.counts.sum(-1),
    )
