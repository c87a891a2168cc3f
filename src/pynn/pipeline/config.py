"""Optional TOML or YAML config for `train`; command-line flags override its values.

    data = "sunspots"
    model = "lstm"
    window = 12
    epochs = 80
    [model_args]          # passed to the model builder, e.g. hidden sizes
    hidden_size = 64
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import PipelineError


def read(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            try:
                import tomli as tomllib
            except ImportError:
                raise PipelineError("reading TOML needs Python 3.11+ or the tomli package") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"{path}: invalid TOML ({exc})") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise PipelineError("reading YAML needs PyYAML (pip install pyyaml); TOML works without it") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise PipelineError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    else:
        raise PipelineError(f"{path}: config must be .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: the config must be a table of settings")
    return {k.replace("-", "_"): v for k, v in data.items()}


def merge(config_cls, file_values: dict, flag_values: dict):
    """Defaults < config file < flags given on the command line (those that are not None)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = dict(file_values)
    extra = values.pop("model_args", {}) or {}
    unknown = sorted(set(values) - names - {"config"})
    if unknown:
        raise PipelineError(f"unknown config key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names - {'extra'}))}")
    values.pop("config", None)
    values.update({k: v for k, v in flag_values.items() if v is not None and k in names})
    for key in ("target", "features"):
        if isinstance(values.get(key), str):
            values[key] = [s.strip() for s in values[key].split(",") if s.strip()]
    cfg = config_cls(**values)
    cfg.extra = dict(extra)
    return cfg
