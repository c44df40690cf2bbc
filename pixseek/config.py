"""Settings: one typed model, read from defaults < config.yaml < PIXSEEK_* env < command-line flags.

Every layer is validated against the same pydantic model, and unknown keys are refused with the
key's name and the keys allowed at that level, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

ENV_PREFIX = "PIXSEEK_"
ENV_DELIMITER = "__"
CONFIG_ENV = "PIXSEEK_CONFIG"
TOKEN_ENV = "PIXSEEK_WEB_TOKEN"  # the documented short name for PIXSEEK_WEB__TOKEN


class ConfigError(ValueError):
    """A setting is unknown or has a value that is not allowed."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(Section):
    name: str = "openai/clip-vit-base-patch32"
    device: str = "auto"
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    batch_size: int = Field(0, ge=0, le=65536)

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"must be auto, cpu, cuda or cuda:N (got {value!r})")


class HnswSettings(Section):
    m: int = Field(16, ge=2, le=512)
    construction_ef: int = Field(100, ge=1)
    search_ef: int = Field(100, ge=1)
    batch_size: int = Field(100, ge=2)
    sync_threshold: int = Field(1000, ge=2)
    num_threads: int = Field(0, ge=0)


class StoreSettings(Section):
    mode: Literal["embedded", "http"] = "embedded"
    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    ssl: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    hnsw: HnswSettings = Field(default_factory=HnswSettings)
    metadata: Literal["full", "lean"] = "full"


class IndexerSettings(Section):
    roots: list[Path] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    include_hidden: bool = False
    follow_symlinks: bool = True
    max_file_mb: float = Field(200.0, gt=0)
    max_pixels: int = Field(89_478_485, ge=1)
    workers: int = Field(0, ge=0)
    decode: Literal["auto", "workers", "batched"] = "auto"
    gpu_decoder: Literal["auto", "nvimgcodec", "nvjpeg"] = "auto"
    readers: Literal["threads", "processes", "auto"] = "auto"
    decode_processes: Literal["auto", "on", "off"] = "auto"
    queue_size: int = Field(256, ge=1)
    delete_guard_share: float = Field(0.5, ge=0.0, le=1.0)


class WatchSettings(Section):
    observer: Literal["native", "polling", "off"] = "native"
    settle_s: float = Field(1.0, ge=0.0)
    reconcile_minutes: float = Field(30.0, gt=0)
    poll_interval_s: float = Field(2.0, gt=0)
    max_pending: int = Field(10_000, ge=1)


class WebSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token: str | None = None
    max_upload_mb: float = Field(20.0, gt=0)


DEFAULT_TEMPLATES = [
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a picture of a {}.",
    "an image showing {}.",
]


class LabelSet(Section):
    """Labels scored against every image at index time; those above the threshold become tags."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    labels: list[str] = Field(min_length=1)
    neutral: list[str] = Field(default_factory=list)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    flag: bool = False


class ClassifySettings(Section):
    templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES), min_length=1)
    label_sets: list[LabelSet] = Field(default_factory=list)

    @field_validator("templates")
    @classmethod
    def _templates_have_slot(cls, value: list[str]) -> list[str]:
        for template in value:
            if template.count("{}") != 1:
                raise ValueError(f"each template needs exactly one {{}} (got {template!r})")
        return value

    @field_validator("label_sets")
    @classmethod
    def _label_sets_are_distinct(cls, value: list[LabelSet]) -> list[LabelSet]:
        _refuse_repeats([label_set.name for label_set in value], "label set names")
        for label_set in value:
            prompts = [*label_set.labels, *label_set.neutral]
            where = f"label set {label_set.name!r}: labels and neutral prompts"
            if any(not prompt.strip() for prompt in prompts):
                raise ValueError(f"{where} must not be empty")
            _refuse_repeats(prompts, where)
        return value

    @property
    def safe_search_default(self) -> bool:
        """Flagged images are hidden unless asked for when any label set flags."""
        return any(label_set.flag for label_set in self.label_sets)


def _refuse_repeats(values: list[str], what: str) -> None:
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"{what} must be unique (repeated: {repeated})")


KeepRule = Literal["largest_pixels", "largest_file", "format", "oldest", "newest", "shortest_path"]


class DedupSettings(Section):
    near_hamming: int = Field(6, ge=0, le=16)
    semantic_threshold: float = Field(0.95, ge=0.5, le=1.0)
    keep_rules: list[KeepRule] = Field(
        default_factory=lambda: ["largest_pixels", "format", "oldest", "shortest_path"]
    )
    format_preference: list[str] = Field(
        default_factory=lambda: ["HEIF", "AVIF", "PNG", "TIFF", "WEBP", "JPEG", "BMP", "GIF"]
    )
    prefer_paths: list[str] = Field(default_factory=list)
    protect_paths: list[str] = Field(default_factory=list)
    quarantine_dir: Path | None = None


class Settings(BaseSettings):
    """The whole configuration; sections mirror config.yaml."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER, extra="forbid"
    )

    data_dir: Path = Path("~/.local/share/pixseek")
    model: ModelSettings = Field(default_factory=ModelSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    indexer: IndexerSettings = Field(default_factory=IndexerSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    classify: ClassifySettings = Field(default_factory=ClassifySettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)

    @property
    def data_path(self) -> Path:
        """The data directory, absolute, with `~` expanded."""
        return self.data_dir.expanduser().absolute()

    @property
    def chroma_path(self) -> Path:
        """Where the embedded Chroma database lives."""
        return (self.store.path or self.data_path / "chroma").expanduser().absolute()

    @property
    def catalog_path(self) -> Path:
        """The SQLite catalog: the source of truth for file state and cached embeddings."""
        return self.data_path / "catalog.sqlite3"


@dataclass
class LoadedConfig:
    """Effective settings plus, for every leaf key, the layer that set it."""

    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)
    file: Path | None = None


def default_config_file() -> Path | None:
    """$PIXSEEK_CONFIG, else ./config.yaml, else ~/.config/pixseek/config.yaml, if present."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in (Path("config.yaml"), Path("~/.config/pixseek/config.yaml").expanduser()):
        if candidate.is_file():
            return candidate
    return None


def load_config(file: Path | None = None, flags: dict[str, Any] | None = None) -> LoadedConfig:
    """Merge the layers, validate once, and remember where each value came from."""
    file = file if file is not None else default_config_file()
    file_layer = _read_yaml(file) if file is not None else {}
    env_layer = _read_env()
    flag_layer = _nest({k: v for k, v in (flags or {}).items() if v is not None})
    merged = _deep_merge(_deep_merge(file_layer, env_layer), flag_layer)
    layers = [
        ("flag", flatten(flag_layer)),
        ("env", flatten(env_layer)),
        (f"file {file}", flatten(file_layer)),
    ]

    def source_of(key: str) -> str:
        for name, values in layers:
            if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in values):
                if name == "env":
                    return name + " " + ENV_PREFIX + key.upper().replace(".", ENV_DELIMITER)
                return name
        return "default"

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source_of)) from None
    sources = {key: source_of(key) for key in flatten(settings.model_dump())}
    return LoadedConfig(settings=settings, sources=sources, file=file)


def describe_validation_error(error: ValidationError, source_of: Callable[[str], str]) -> str:
    """One line per problem: the dotted key, where it was set, what is wrong, what is allowed."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        origin = f" (from {source_of(key)})"
        if problem["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(problem["loc"][:-1]))
            lines.append(f"{key}: unknown setting{origin}; allowed here: {allowed}")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message}; got {problem.get('input')!r}{origin}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {file} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a mapping of settings")
    return data


def _env_names(model: type[BaseModel], prefix: str) -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        env_name = prefix + name.upper()
        names.add(env_name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(annotation, env_name + ENV_DELIMITER)
    return names


def _read_env() -> dict[str, Any]:
    known = _env_names(Settings, ENV_PREFIX) | {CONFIG_ENV, TOKEN_ENV}
    for name in os.environ:
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"{name}: unknown environment setting; allowed: {allowed}")
    values = EnvSettingsSource(Settings)()
    if os.environ.get(TOKEN_ENV) and "token" not in values.get("web", {}):
        values = _deep_merge(values, {"web": {"token": os.environ[TOKEN_ENV]}})
    return values


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "headers":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (`store.hnsw.m`); `headers` stays one value."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "headers":
            flat |= flatten(value, dotted + ".")
        else:
            flat[dotted] = value
    return flat
