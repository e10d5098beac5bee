"""Run presets: configuration as data, not branches in code.

``test`` is sized for CI (tiny images, small chunks); ``fast`` for a laptop demo; ``paper``
is the paper's setup (network input sizes 69, 128 and 197 px, for CNN3, CNN2 and CNN1).
Later stages add their own keys (epochs, batch sizes, networks).
"""

from __future__ import annotations

from types import MappingProxyType

PRESETS = MappingProxyType(
    {
        "test": MappingProxyType({"resolutions": (32,), "chunk_size": 50}),
        "fast": MappingProxyType({"resolutions": (69, 128), "chunk_size": 200}),
        "paper": MappingProxyType({"resolutions": (69, 128, 197), "chunk_size": 500}),
    }
)


def preset(name: str) -> dict:
    """A mutable copy of the named preset; unknown names fail with the choices."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
