"""Compiled versions of the moves, and the switch between compiled and eager.

Four functions are compiled: the counter-based local half-sweep with its generator
inside; the multilevel and sign-cluster moves from their random words; and the
counter-based generator of every move's words (Threefry2x32-20 at given counters).
Compiled and eager runs draw the same numbers.
``QNN_TORCH_COMPILE`` chooses: ``"0"`` runs the moves eagerly (the same Python source, pass
by pass); ``"1"`` or unset (the default) compiles them with ``torch.compile`` at first use
(inductor: C++/OpenMP on CPU, Triton on CUDA); names from :data:`COMPILED_NAMES` joined by
commas compile those alone (``counter_words``: the generator alone, one graph). Where
compiling fails (no C++ compiler, an unsupported platform) the eager path runs instead,
with one warning. Shapes are compiled
as dynamic, without duck sizing, so batch compaction, a last smaller chunk and decision
mode's changing batches do not recompile. A new dtype, device, count of slices or
multilevel block length (compiled static), colouring of the neurons, or presence of links,
input inhibition or shared noise does, and so does a chunk of one row (dynamo specialises
sizes 0 and 1); the local half-sweep compiles one graph per parity. Past dynamo's limit of
graphs per function (8 by default, ``torch._dynamo.config.recompile_limit``) it runs the
rest eagerly, with dynamo's warning. Inductor keeps what it compiled on disk
(``TORCHINDUCTOR_CACHE_DIR``), so later processes start faster. :data:`compile_seconds`
records how long the first call of each compiled function took.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.fx.experimental import _config as shape_config
from torch.utils._pytree import tree_leaves

from qnn_torch.functional import sampler

COMPILE_ENV = "QNN_TORCH_COMPILE"
# The shape setting of compiled calls (torch < 2.5 has none: duck sizing stays there).
_WITHOUT_DUCK_SIZING = {"use_duck_shape": False} if hasattr(shape_config, "use_duck_shape") else {}
compile_seconds: dict[str, float] = {}
"""Seconds of the first call of each compiled function (compilation included), by name."""


def compile_requested(name: str) -> bool:
    """Whether ``QNN_TORCH_COMPILE`` asks to compile the function ``name`` (module doc);
    a ValueError names the setting if it is none of "0", "1" or names of
    :data:`COMPILED_NAMES` joined by commas."""
    setting = os.environ.get(COMPILE_ENV, "1").strip()
    if setting in ("0", "1"):
        return setting == "1"
    names = {part.strip() for part in setting.split(",")}
    if not names <= set(COMPILED_NAMES):
        raise ValueError(
            f"{COMPILE_ENV} must be 0, 1 or names of {COMPILED_NAMES} joined by commas, "
            f"got {setting!r}"
        )
    return name in names


class CompiledOrEager:
    """``fn`` compiled with ``torch.compile`` at first call, or ``fn`` itself.

    Eager when ``QNN_TORCH_COMPILE=0``, or after the backend failed to compile once
    (warned: no C++ compiler, an unsupported platform; other errors are raised). Both run
    the same source, so they give the same numbers up to floating-point rounding.

    ``static_dims`` maps positional arguments (tensors, or lists and tuples of them) to the
    dimensions (one, or a tuple) that are compiled as constants (a new size recompiles):
    the slices of a lattice, so that index arithmetic on them, such as the periodic
    neighbour's modulo, folds into shifts and masks.
    """

    def __init__(
        self, fn: Callable[..., Any], static_dims: dict[int, int | tuple[int, ...]] | None = None
    ) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.static_dims = static_dims or {}
        self.compiled: Callable[..., Any] | None = None
        self.failed = False

    def active(self) -> bool:
        """Whether calls run compiled: requested, and not failed to compile."""
        return compile_requested(self.name) and not self.failed

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.active():
            return self.fn(*args, **kwargs)
        for position, dims in self.static_dims.items():
            for leaf in tree_leaves(args[position]):
                for dim in dims if isinstance(dims, tuple) else (dims,):
                    torch._dynamo.mark_static(leaf, dim % leaf.dim())
        if self.compiled is None:
            from torch._dynamo.exc import BackendCompilerFailed  # 1 s to import: at first use

            self.compiled = torch.compile(self.fn, dynamic=True)
            began = time.perf_counter()
            try:
                result = self._call_compiled(*args, **kwargs)
            except BackendCompilerFailed as err:  # no compiler: eager
                # Compilation fails before the compiled code runs, so the arguments are as
                # they were; a failure inside the function itself is raised, not hidden.
                self.failed = True
                warnings.warn(
                    f"torch.compile of {self.name} failed ({type(err).__name__}: {err}); "
                    f"running it eagerly (slower; {COMPILE_ENV}=0 chooses this without trying)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return self.fn(*args, **kwargs)
            compile_seconds[self.name] = time.perf_counter() - began
            return result
        return self._call_compiled(*args, **kwargs)

    def _call_compiled(self, *args: Any, **kwargs: Any) -> Any:
        # Without duck sizing: dynamo would give equal sizes one symbol (a chunk's rows and
        # another tensor's size), and the next chunk of another size would compile another
        # graph (PyTorch's own advice for that specialisation). The patch costs each call
        # about 65 µs (165–180 against 100–115 µs for 4 rows): about 1 % of a half-sweep at
        # the engine's chunks for the compiled move (2**21 sites).
        with shape_config.patch(**_WITHOUT_DUCK_SIZING):
            return self.compiled(*args, **kwargs)


local_half_sweep = CompiledOrEager(sampler.counter_local_half_sweep, static_dims={0: 2, 1: 2})
"""The counter-based local half-sweep, compiled where possible, for each count of slices
(a static count: 1.2–1.5× the site updates per second of a dynamic one, whose periodic
neighbours took an integer division each)."""


bisection_blocks = CompiledOrEager(
    sampler.bisection_blocks, static_dims={0: 2, 1: 0, 2: 0, 4: (0, -2, -1)}
)
"""The multilevel move from its random words, compiled where possible, for each count of
slices and block length (static; with the words' planes and counts): 1.4–2.3× the site
updates per second of the same move eagerly, measured when it took torch's normals
(docs/benchmarks.md)."""


sign_cluster_flips = CompiledOrEager(sampler.sign_cluster_flips, static_dims={0: -1, 1: (0, -1)})
"""The sign-cluster move from its random words, compiled where possible, for each count of
slices (static): 0.8–1.3× the same move eagerly when it took torch's uniforms (its two
scans stay aten calls)."""


counter_words = CompiledOrEager(sampler.counter_words)
"""Threefry2x32-20's words at given counters, compiled where possible: the numbers of the
multilevel, shift and sign-cluster moves, and every move's banks of many sweeps, whatever
the shapes and dtype, in a few graphs (dynamo specialises counts of 1: one sweep's words,
a single row or counter). A graph holding Threefry's twenty rounds takes inductor about
40 s to compile at first, a few seconds from its cache. (Sizes marked unbacked gave one
graph for all, but its calls cost 0.4–0.7 ms more.)"""


COMPILED_NAMES = (
    local_half_sweep.name,
    bisection_blocks.name,
    sign_cluster_flips.name,
    counter_words.name,
)
"""The compiled functions, as ``QNN_TORCH_COMPILE`` names them."""
