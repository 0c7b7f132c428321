"""Named feature taps: intermediate activations of any network, read by forward hooks on module paths.

A *tap* is a module path inside a network (``backbone.layer3``, ``net.body.conv_12``).  :class:`FeatureTaps`
registers one forward hook per path and keeps the latest output of each, so a teacher or student gives
its intermediate maps without any change to its code (the way torchdistill's forward-hook manager does)::

    with FeatureTaps(student, ["backbone.layer2", "backbone.layer4"]) as taps:
        logits = student(x)
        maps = taps.outputs            # {"backbone.layer2": B x 128 x 8 x 8, ...}

Each network names its default tap sets, bottom layer to top, in its own module with
:func:`register_tap_sets` (``stages``: one tap per stage; ``top``: the deepest map, a FitNet hint layer;
``embedding``: the vector the network outputs).  :data:`TAP_SETS` reads them all (a lookup imports the network
modules through the network registries' scan); :func:`tap_set` resolves a set name (or an explicit list) for a
network.
"""
from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn
from facekd.errors import FacekdError

__all__ = ["TapError", "FeatureTaps", "TAP_SETS", "TAP_SET_ALIASES", "register_tap_sets", "module_paths",
           "resolve_module", "tap_set", "tap_shapes"]

log = logging.getLogger(__name__)


class TapError(FacekdError, ValueError):
    """A tap that does not exist, or a tap set that a network does not have."""


# Old tap-set names that still resolve (with a warning): ``skd`` was the one-tap-per-stage set.
TAP_SET_ALIASES: dict[str, str] = {"skd": "stages"}

_SETS: dict[str, Mapping[str, tuple[str, ...]]] = {}


def register_tap_sets(network: str, sets: Mapping[str, Sequence[str]]) -> Mapping[str, tuple[str, ...]]:
    """Register ``network``'s named tap sets (each bottom to top); call it in the network's own module.

    Returns the sets as registered (read-only), for the module to keep as its ``TAP_SETS``.
    """
    frozen = MappingProxyType({name: tuple(paths) for name, paths in sets.items()})
    if network in _SETS and dict(_SETS[network]) != dict(frozen):
        raise ValueError(f"tap sets of network '{network}' are registered twice")
    _SETS[network] = frozen
    return frozen


def _load() -> None:
    """Import every network module (they register their tap sets), through the network registries' scan."""
    from facekd.models.registry import STUDENTS, TEACHERS  # lazily: the network modules import this module

    STUDENTS.names()
    TEACHERS.names()


class _TapSets(Mapping[str, Mapping[str, tuple[str, ...]]]):
    """Read-only ``network -> {set name: paths}`` of every registered network; lookups load the networks first."""

    def __getitem__(self, network: str) -> Mapping[str, tuple[str, ...]]:
        _load()
        return _SETS[network]

    def __iter__(self) -> Iterator[str]:
        _load()
        return iter(list(_SETS))

    def __len__(self) -> int:
        _load()
        return len(_SETS)


TAP_SETS: Mapping[str, Mapping[str, tuple[str, ...]]] = _TapSets()


def module_paths(net: nn.Module) -> list[str]:
    """Every addressable module path of ``net`` (the names a tap may use)."""
    return [name for name, _ in net.named_modules() if name]


def resolve_module(net: nn.Module, path: str, key: str = "tap") -> nn.Module:
    """The submodule at ``path``; a :class:`TapError` naming ``key`` and the paths that exist otherwise."""
    try:
        return net.get_submodule(path)
    except AttributeError:
        paths = module_paths(net)
        near = [p for p in paths if p.split(".")[-1] == path.split(".")[-1]] or paths[:40]
        more = "" if len(paths) <= 40 else f" ... ({len(paths)} in all)"
        raise TapError(f"{key}={path!r}: {type(net).__name__} has no module at that path. "
                       f"Module paths it has: {', '.join(near)}{more}") from None


def tap_set(net_name: str, spec: str | Sequence[str], key: str = "taps") -> list[str]:
    """A tap set by name (``stages``, ``top``, ``embedding``) for network ``net_name``, or an explicit list as is.

    An old name in :data:`TAP_SET_ALIASES` (``skd``) resolves to its new one with a warning.
    """
    if isinstance(spec, str):
        if spec in TAP_SET_ALIASES:
            log.warning("tap set %r is now called %r", spec, TAP_SET_ALIASES[spec])
            spec = TAP_SET_ALIASES[spec]
        sets = TAP_SETS.get(net_name, {})
        if spec not in sets:
            raise TapError(f"{key}={spec!r}: network '{net_name}' has no tap set of that name; "
                           f"it has: {', '.join(sets) or 'none (list module paths explicitly)'}")
        return list(sets[spec])
    return [str(p) for p in spec]


class FeatureTaps:
    """Forward hooks on module paths of ``net``; ``outputs`` holds each path's latest output.

    Use it as a context manager (hooks removed on exit) or call :meth:`remove`.  ``detach=True`` stores
    detached outputs (for a frozen teacher).
    """

    def __init__(self, net: nn.Module, paths: Iterable[str], detach: bool = False, key: str = "tap") -> None:
        self.paths = list(dict.fromkeys(paths))
        self.detach = detach
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [resolve_module(net, p, key).register_forward_hook(self._hook(p)) for p in self.paths]

    def _hook(self, path: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.outputs[path] = output.detach() if self.detach else output
        return hook

    def clear(self) -> None:
        self.outputs = {}

    def collect(self) -> dict[str, torch.Tensor]:
        """The outputs of the last forward, in tap order; raises if a tap did not fire."""
        missing = [p for p in self.paths if p not in self.outputs]
        if missing:
            raise TapError(f"tap(s) {', '.join(missing)} produced no output in the last forward pass "
                           "(the module is not on the path the network ran)")
        out = {p: self.outputs[p] for p in self.paths}
        self.outputs = {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@torch.no_grad()
def tap_shapes(net: nn.Module, paths: Sequence[str], input_size: int, key: str = "tap") -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of each tap, from one dry forward pass on a ``2 x 3 x S x S`` input."""
    was_training = net.training
    net.eval()
    try:
        with FeatureTaps(net, paths, detach=True, key=key) as taps:
            net(torch.zeros(2, 3, int(input_size), int(input_size), device=_device(net)))
            return {p: tuple(t.shape[1:]) for p, t in taps.collect().items()}
    finally:
        net.train(was_training)


def _device(net: nn.Module) -> torch.device:
    for t in (*net.parameters(), *net.buffers()):
        return t.device
    return torch.device("cpu")

