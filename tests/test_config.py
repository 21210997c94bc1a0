"""Config layering, validation, presets and round trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from facefold.config import Config
from facefold.models.presets import describe_preset, get_preset, list_presets, resolve_config


def test_defaults_are_the_2016_model() -> None:
    cfg = get_preset("seed")
    assert cfg.model.conv_channels == (32, 48, 72, 108)
    assert cfg.model.dense_units == (1024, 256)
    assert (cfg.model.crop_size, cfg.model.input_size, cfg.model.channels) == (96, 96, 3)
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.learning_rate) == (8000, 128, 1e-3)
    assert cfg.model.weight_decay == 0.005


def test_layers_resolve_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "reduced"\n[train]\nsteps = 500\nbatch_size = 64\n')
    cfg = resolve_config(None, toml, {"train": {"steps": 7}})
    assert cfg.preset == "reduced"  # from the file
    assert cfg.model.dense_units == (96, 128)  # from the preset
    assert cfg.train.batch_size == 64  # file over default
    assert cfg.train.steps == 7  # command line over file
    # an explicit preset wins over the file's preset key, the file still applies
    assert resolve_config("seed", toml).model.dense_units == (1024, 256)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train": {"stepz": 3}}, "unknown key 'stepz' in [train]"),
        ({"optimizer": {"lr": 3}}, "unknown section [optimizer]"),
        ({"train": {"steps": "many"}}, "train.steps must be int"),
        ({"train": {"steps": 0}}, "train.steps must be >= 1, got 0"),
        ({"train": {"precision": "float16"}}, "train.precision must be one of"),
        ({"model": {"channels": 2}}, "model.channels must be 1 or 3"),
        ({"model": {"input_size": 128}}, "model.input_size must be between 8 and crop_size"),
        ({"augment": {"contrast": [1.4, 0.6]}}, "augment.contrast"),
        ({"augment": {"scale": [0.0, 1.0]}}, "augment.scale must be [low, high] with 0 < low"),
        ({"augment": {"rotation": 90.0}}, "augment.rotation must be in [0, 45]"),
        ({"model": {"dropout": 1.0}}, "model.dropout must be in [0, 1)"),
        ({"train": {"lr_schedule": "step"}}, "train.lr_schedule must be one of constant, cosine"),
        ({"train": {"ema_decay": 1.0}}, "train.ema_decay must be in [0, 1)"),
        ({"train": {"label_smoothing": -0.1}}, "train.label_smoothing must be in [0, 1)"),
        ({"model": {"embedding": "facenet"}}, "model.embedding must be \"\" (a CNN on pixels)"),
        ({"model": {"cosine_margin": 0.3}}, "model.cosine_margin needs cosine logits"),
        ({"model": {"drop_path": 0.1}}, "model.drop_path drops residual stages: it needs"),
        ({"model": {"cosine_scale": 16.0, "cosine_margin": 1.0}},
         "model.cosine_margin must be in [0, 1)"),
        ({"model": {"resize": "nearest"}},
         "model.resize must be one of antialias, bilinear, area"),
        ({"model": {"embedding": "dlib128", "channels": 1}}, "model.channels must be 3 for"),
        ({"model": {"embedding": "dlib128"}}, "train.sparsity_every must be 0 for an embedding"),
        ({"model": {"members": ["fast"]}}, "model.members must name at least two different"),
        ({"model": {"members": ["fast", "fast"]}}, "model.members must name at least two"),
        ({"model": {"members": [1, 2]}}, "model.members must be str"),
    ],
)
def test_bad_values_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_config("seed", overrides=overrides)


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="known presets: seed, reduced"):
        get_preset("nope")


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3")
    with pytest.raises(ValueError, match=r"bad\.toml"):
        resolve_config(None, bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        resolve_config(None, tmp_path / "missing.toml")


@pytest.mark.parametrize("name", list_presets())
def test_round_trip_through_json_dict(name: str) -> None:
    import json

    cfg = get_preset(name)
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert describe_preset(name)


def test_ablation_presets_change_one_thing() -> None:
    seed = get_preset("seed")
    assert get_preset("grayscale").model.channels == 1
    for size in (80, 64, 48, 32):
        cfg = get_preset(f"size{size}")
        assert cfg.model.input_size == size
        assert cfg.model.crop_size == seed.model.crop_size


def test_modern_options_are_off_in_the_2016_presets() -> None:
    for name in ("seed", "reduced", "grayscale", "size80", "size64", "size48", "size32"):
        cfg = get_preset(name)
        assert not (cfg.model.batch_norm or cfg.model.residual or cfg.model.global_pool)
        assert (cfg.model.dropout, cfg.model.tta_flip) == (0.0, False)
        assert (cfg.augment.scale, cfg.augment.aspect) == ((1.0, 1.0), (1.0, 1.0))
        assert (cfg.augment.rotation, cfg.augment.erasing) == (0.0, 0.0)
        assert (cfg.train.lr_schedule, cfg.train.warmup_steps) == ("constant", 0)
        assert (cfg.train.adamw_decay, cfg.train.label_smoothing, cfg.train.ema_decay) == (0, 0, 0)


def _differences(a: Config, b: Config) -> set[str]:
    """``section.key`` of every value that differs between two configs."""
    da, db = a.to_dict(), b.to_dict()
    sections = ("model", "augment", "train")
    return {f"{s}.{k}" for s in sections for k in da[s] if da[s][k] != db[s][k]}


def test_each_ablation_changes_only_its_ingredient() -> None:
    from facefold.models.presets import ABLATIONS

    fast, modern = get_preset("fast"), get_preset("modern")
    for name, (_, changes) in ABLATIONS.items():
        expected = {f"{s}.{k}" for s, keys in changes.items() for k in keys}
        assert _differences(get_preset(name), fast) == expected, name
    assert _differences(fast, modern) == {
        "train.steps", "train.eval_every", "train.learning_rate", "train.warmup_steps"}
    assert get_preset("fast").train.steps * 4 == get_preset("seed").train.steps


def test_ensemble_members_from_toml_and_their_configs(tmp_path: Path) -> None:
    from facefold.models.presets import member_configs

    toml = tmp_path / "e.toml"
    toml.write_text('preset = "seed"\n[model]\nmembers = ["reduced", "dlib128"]\n'
                    "[train]\nseed = 3\n")
    cfg = resolve_config(None, toml)
    assert cfg.family == "ensemble" and cfg.model.members == ("reduced", "dlib128")
    assert Config.from_dict(cfg.to_dict()) == cfg
    reduced, head = member_configs(cfg)  # the ensemble's own change (seed 3) reaches each member
    assert reduced == get_preset("reduced").replace(train={"seed": 3})
    assert head == get_preset("dlib128").replace(train={"seed": 3})
    assert head.family == "embedding" and reduced.family == "cnn"
    with pytest.raises(ValueError, match="ensemble member 'ensemble' is an ensemble itself"):
        member_configs(cfg.replace(model={"members": ["ensemble", "seed"]}))


def test_every_preset_names_its_family() -> None:
    families = {name: get_preset(name).model.family for name in list_presets()}
    assert families["seed"] == families["fast-64-distilled"] == "cnn"
    assert families["dlib128"] == families["dlib128-single"] == "embedding"
    assert families["ensemble"] == families["fast-64-duo"] == "ensemble"
    for name, family in families.items():  # each one the family its model keys describe
        model = get_preset(name).model
        assert (family == "ensemble") == bool(model.members), name
        assert (family == "embedding") == bool(model.embedding), name


@pytest.mark.parametrize(("base", "overrides", "message"), [
    ("seed", {"model": {"family": "forest"}}, "model.family must be one of cnn, embedding"),
    ("seed", {"model": {"family": "embedding"}},
     "model.family is 'embedding', but model.embedding"),
    ("dlib128", {"model": {"family": "cnn"}}, "model.family is 'cnn', but model.embedding"),
    ("ensemble", {"model": {"family": "cnn"}}, "model.family is 'cnn', but model.members"),
])
def test_a_family_that_contradicts_the_model_is_refused(base: str, overrides: dict,
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_config(base, overrides=overrides)


@pytest.mark.parametrize("name", ["seed", "dlib128", "ensemble-weighted", "fast-64-distilled"])
def test_configs_written_before_the_family_key_read_the_same(name: str) -> None:
    """A config.json (and so a run's identity) is written as before the key existed, and one
    without it reads as the preset, so existing run folders stay the same runs."""
    config = get_preset(name)
    written = config.to_dict()
    assert "family" not in written["model"]
    assert Config.from_dict(written) == config
    named = {**written, "model": {**written["model"], "family": config.family}}
    assert Config.from_dict(named) == config
