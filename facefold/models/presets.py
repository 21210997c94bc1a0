"""The preset registry: every model variant is a name plus a few values.

``list_presets()`` drives the CLI's choices and the tests (every preset must
build and train). Add a variant with :func:`register_preset`, never by copying
model code.
"""

from __future__ import annotations

from typing import Any

from facefold.config import Config, apply_overrides

_PRESETS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}


def register_preset(name: str, description: str, **sections: dict[str, Any]) -> None:
    """Register ``name`` as the default config with ``sections`` overridden.

    ``sections`` maps a section (``model``, ``augment``, ``train``) to the keys it changes.
    """
    if name in _PRESETS:
        raise ValueError(f"preset '{name}' is already registered")
    apply_overrides(Config(preset=name), sections, f"preset '{name}'")  # fail early on typos
    _PRESETS[name] = (description, sections)


def get_preset(name: str) -> Config:
    """The resolved config of a registered preset; ``ValueError`` lists the known ones."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset '{name}'; known presets: {', '.join(list_presets())}")
    return apply_overrides(Config(preset=name), _PRESETS[name][1], f"preset '{name}'")


def list_presets() -> list[str]:
    """Names of all registered presets, in registration order."""
    return list(_PRESETS)


def describe_preset(name: str) -> str:
    """The one-line description given at registration."""
    get_preset(name)
    return _PRESETS[name][0]


register_preset(
    "seed",
    "the 2016 model: 4 x conv3x3+maxpool (32/48/72/108), dense 1024-256, 96x96 RGB crops",
)
register_preset(
    "reduced",
    "the 2016 cut-down model (1/12 the checkpoint): conv 32/48/72/72, dense 96-128",
    model={"conv_channels": [32, 48, 72, 72], "dense_units": [96, 128]},
)
register_preset(
    "grayscale",
    "the seed model on 1-channel (gray) input; no hue/saturation jitter",
    model={"channels": 1},
)
for _size in (80, 64, 48, 32):
    register_preset(
        f"size{_size}",
        f"the seed model on the 96x96 crop resized to {_size}x{_size}",
        model={"input_size": _size},
    )
