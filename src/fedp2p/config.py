"""Run configuration: one frozen dataclass, loaded from TOML and `key=value` overrides checked against it."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from fedp2p.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ALGORITHMS = ("local", "central", "weights", "logits", "features", "hybrid")
ARCHS = ("cnn3", "cnn5", "cnn7")
TOPOLOGIES = ("full", "ring", "random", "exponential")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result; saved resolved next to every result."""

    # data
    dataset: str = "mnist"
    data_dir: str = ""
    clients: int = 30
    archs: tuple[str, ...] = ARCHS
    alpha: float = 0.1
    min_shard: int = 50
    local_test_fraction: float = 0.2
    reference_size: int = 2000
    seed: int = 0
    # learning
    algorithm: str = "local"
    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    eval_every: int = 1
    eval_subset: int = 500
    # knowledge distillation
    kd_temperature: float = 3.0
    kd_sharpen: float = 0.1  # entropy reduction of the neighbours' ensemble; 1.0 turns it off
    kd_weight: float = 1.0
    feature_weight: float = 1.0
    kd_epochs: int = 1
    kd_samples: int = 500
    kd_batch_size: int = 64
    # network
    topology: str = "full"
    degree: int = 4
    round_timeout: float = 120.0
    join_timeout: float = 120.0
    host: str = "127.0.0.1"
    base_port: int = 0
    # machine and output
    device: str = "auto"
    threads: int = 0
    out_dir: str = "runs"
    name: str = ""

    def __post_init__(self) -> None:
        """Refuse values that cannot work, with a sentence that says which and why."""
        for algo in self.algorithms:
            if algo not in ALGORITHMS:
                raise UserError(
                    f"algorithm {algo!r} is unknown; choose from {', '.join(ALGORITHMS)}."
                )
        for arch in self.archs:
            if arch not in ARCHS:
                raise UserError(f"arch {arch!r} is unknown; choose from {', '.join(ARCHS)}.")
        if self.topology not in TOPOLOGIES:
            raise UserError(
                f"topology {self.topology!r} is unknown; choose from {', '.join(TOPOLOGIES)}."
            )
        checks = [
            (self.clients >= 1, "clients must be at least 1"),
            (len(self.archs) >= 1, "archs must name at least one architecture"),
            (self.alpha > 0, "alpha must be positive"),
            (0 <= self.local_test_fraction < 1, "local_test_fraction must be in [0, 1)"),
            (self.reference_size >= 0, "reference_size must be >= 0"),
            (self.min_shard >= 2, "min_shard must be at least 2"),
            (self.rounds >= 1, "rounds must be at least 1"),
            (self.local_epochs >= 0, "local_epochs must be >= 0"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.eval_every >= 1, "eval_every must be at least 1"),
            (self.kd_temperature > 0, "kd_temperature must be positive"),
            (self.kd_samples >= 1, "kd_samples must be at least 1"),
            (0 < self.kd_sharpen <= 1, "kd_sharpen must be in (0, 1]"),
            (self.round_timeout > 0, "round_timeout must be positive"),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "device must be auto, cpu, cuda or cuda:N",
            ),
            (self.threads >= 0, "threads must be >= 0 (0 picks automatically)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"{message}; fix it in the config file or with --set.")

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms to run, in order: `algorithm` may list several, comma-separated."""
        return tuple(a.strip() for a in self.algorithm.split(",") if a.strip())

    def arch_of(self, client: int) -> str:
        """Architectures are dealt round-robin, so 30 clients get 10 of each of three."""
        return self.archs[client % len(self.archs)]

    def to_toml(self) -> str:
        """The resolved config as TOML, so a peer process reads exactly what its launcher ran."""
        return "".join(f"{k} = {_toml_value(v)}\n" for k, v in self.to_dict().items())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field, the resolved config saved with each run."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in fields(RunConfig)}


def _unknown_key(key: str) -> UserError:
    names = [f.name for f in fields(RunConfig)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
    return UserError(f"unknown config key {key!r}{hint}.")


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Turn a TOML value or a `--set` string into the field's type, or say why it cannot be."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        if isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise UserError(f"config key {key!r} takes a list, got {value!r}.")
        return tuple(str(v) for v in items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"config key {key!r} takes true or false, got {value!r}.")
    if kind in (int, float):
        if isinstance(value, bool):
            raise UserError(f"config key {key!r} takes a number, got {value!r}.")
        try:
            number = kind(value) if isinstance(value, str) else value
        except ValueError:
            raise UserError(f"config key {key!r} takes a {kind.__name__}, got {value!r}.") from None
        if kind is int and (not isinstance(number, int) or isinstance(number, float)):
            raise UserError(f"config key {key!r} takes an int, got {value!r}.")
        return kind(number)
    if kind is str:
        return str(value)
    raise UserError(f"config key {key!r} has a type this loader cannot parse.")  # pragma: no cover


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """Split `key=value` strings from the command line, refusing malformed ones."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {pair!r}.")
        out[key.strip()] = value.strip()
    return out


def build_config(
    base: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """Defaults, then a file's values, then overrides; every key and type checked."""
    kinds = _field_types()
    values: dict[str, Any] = {}
    for source in (base or {}, overrides or {}):
        for key, value in source.items():
            if key not in kinds:
                raise _unknown_key(key)
            values[key] = _coerce(key, value, kinds[key])
    return RunConfig(**values)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; tables are flattened, since every key is unique."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist; check the path.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {str(p)!r} is not valid TOML ({exc}).") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def preset_names() -> list[str]:
    """Presets shipped inside the package, for the README's short main job."""
    folder = resources.files("fedp2p") / "presets"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def read_preset(name: str) -> dict[str, Any]:
    """Load a shipped preset by name."""
    if name not in preset_names():
        raise UserError(f"preset {name!r} is unknown; choose from {', '.join(preset_names())}.")
    text = (resources.files("fedp2p") / "presets" / f"{name}.toml").read_text(encoding="utf-8")
    return dict(tomllib.loads(text))


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """The one way the CLI builds a config: preset, then file, then `--set` overrides."""
    base: dict[str, Any] = {}
    if preset:
        base.update(read_preset(preset))
    if path:
        base.update(read_toml(path))
    return build_config(base, overrides)


def replace(config: RunConfig, **changes: Any) -> RunConfig:
    """A changed copy, re-validated."""
    return dataclasses.replace(config, **changes)


__all__ = [
    "ALGORITHMS",
    "ARCHS",
    "TOPOLOGIES",
    "RunConfig",
    "build_config",
    "load_config",
    "parse_overrides",
    "preset_names",
    "read_preset",
    "read_toml",
    "replace",
]
