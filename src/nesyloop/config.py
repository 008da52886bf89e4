"""Configs are TOML files validated by pydantic. A bad config gets a one-line ConfigError that
names the file and the key; unknown keys are errors, not silently ignored."""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from .costs.budget import Prices
from .errors import ConfigError
from .methods.fdd.settings import FddSettings
from .methods.joined.settings import JoinedSettings
from .methods.nesycd.settings import NesycdSettings
from .students.scratch import ScratchSettings
from .students.train import TrainSettings
from .tasks.bazaar import BazaarSettings
from .tasks.bench.settings import BenchSettings

def _registered(name: str) -> str:
    """A method's name, checked against the registry (nesyloop.methods.registry)."""
    from .methods.registry import not_registered

    if (bad := not_registered(name)) is not None:
        raise ValueError(bad)
    return name


MethodName = Annotated[str, AfterValidator(_registered)]


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return v


def _env_name(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        raise ValueError("expected the name of an environment variable (not the key itself)")
    return v


HttpUrl = Annotated[str, AfterValidator(_http_url)]
EnvName = Annotated[str, AfterValidator(_env_name)]  # secrets come from the environment only


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSection(_Strict):
    out: str = "runs/default"  # the run directory (CLI --out overrides)
    seed: int = 0
    cache: str | None = None  # SQLite request cache; default $NESYLOOP_CACHE or ~/.cache/nesyloop
    progress: bool = True


TaskName = Literal["bazaar", "gsm8k", "svamp", "asdiv", "multiarith", "bbh", "agieval",
                   "arc-easy", "arc-challenge", "user"]


class TaskSection(_Strict):
    name: TaskName = "bazaar"  # the Bazaar world, or a benchmark (docs/benchmarks.md)
    bazaar: BazaarSettings = Field(default_factory=BazaarSettings)
    bench: BenchSettings = Field(default_factory=BenchSettings)  # a benchmark's files, splits


# teacher keys that change how requests are sent or paid for, never what comes back: they are
# not part of any stage's fingerprint (raising a budget or a rate limit recomputes nothing)
TEACHER_OPERATIONAL = frozenset({"openai", "prices", "budget_usd"})


class OracleTeacher(_Strict):
    """``[teacher.oracle]``: the Bazaar oracle's own keys."""

    error_rate: float = Field(0.1, ge=0.0, le=1.0)  # how often it is deliberately wrong


class OpenAITeacher(_Strict):
    """``[teacher.openai]``: any OpenAI-compatible endpoint (docs/teachers.md)."""

    base_url: HttpUrl = "https://api.openai.com/v1"
    api_key_env: EnvName = "OPENAI_API_KEY"  # the NAME of the variable that holds the key
    concurrency: int = Field(8, ge=1)  # requests in flight
    rpm: float | None = Field(None, gt=0)  # requests per minute (None: no limit)
    tpm: float | None = Field(None, gt=0)  # tokens per minute (None: no limit)
    max_retries: int = Field(5, ge=0)  # on 429, 5xx, timeouts, dropped connections
    timeout_s: float = Field(120.0, gt=0)  # per HTTP call
    backoff_s: float = Field(1.0, ge=0)  # first retry's wait (doubles each time, with jitter)
    raw_prompts: Literal["chat", "completions"] = "chat"  # one user message or /v1/completions


class TeacherSection(_Strict):
    # dataset: no model; the training examples' own worked solutions are the rationales
    backend: Literal["oracle", "hf", "openai", "dataset"] = "oracle"
    # hf: a local path, .gguf file, "smollm2", or a hub name; openai: the server's model name
    model: str = "bazaar-oracle"
    samples: int = Field(2, ge=1)  # k rationales per training question
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(384, ge=1)
    batch_size: int = Field(64, ge=1)
    prices: Prices = Field(default_factory=Prices)  # USD per million tokens
    budget_usd: float | None = Field(None, gt=0)  # cap on what one run may spend
    oracle: OracleTeacher = Field(default_factory=OracleTeacher)  # backend "oracle" only
    openai: OpenAITeacher = Field(default_factory=OpenAITeacher)  # backend "openai" only

    def identity(self) -> dict[str, Any]:
        """What the teacher's replies depend on: the stage fingerprints' teacher settings (the
        flat shape they had before the backends' keys were grouped, so runs still resume)."""
        out = self.model_dump(mode="json", exclude=set(TEACHER_OPERATIONAL) | {"oracle"})
        return {**out, **self.oracle.model_dump(mode="json")}


def _student_engine(name: str) -> str:
    from .gen.registry import STUDENT_ENGINES

    if name not in STUDENT_ENGINES:
        raise ValueError(f"unknown engine {name!r} (expected one of {', '.join(STUDENT_ENGINES)})")
    return name


class StudentServer(_Strict):
    """``[student.server]``: the student behind an OpenAI-compatible server (engine "server",
    docs/recipes.md). Exactly one of ``command`` and ``base_url``."""

    # started for each checkpoint a stage needs, e.g. "vllm serve {model} --port {port}"
    command: str | None = None
    base_url: HttpUrl | None = None  # a server you run, listing the checkpoint's path
    api_key_env: EnvName = "NESYLOOP_STUDENT_API_KEY"  # the NAME of the key's variable
    concurrency: int = Field(32, ge=1)  # requests in flight
    start_timeout_s: float = Field(600.0, gt=0)  # command: until GET /v1/models answers

    @field_validator("command")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            words = shlex.split(v)
        except ValueError as err:
            raise ValueError(f"cannot split it into words as a shell would ({err})") from None
        missing = [p for p in ("{model}", "{port}") if not any(p in w for w in words)]
        if missing:
            raise ValueError(f"needs {' and '.join(missing)} (the checkpoint and the port "
                             "nesyloop picks)")
        return v


class StudentSection(_Strict):
    model: str = "scratch"  # "scratch", a local checkpoint, a .gguf file, "smollm2", a hub name
    scratch: ScratchSettings = Field(default_factory=ScratchSettings)
    # what runs the student for predictions, feedback, demos, `eval` and `kb attribute`: "hf"
    # (in this process) or "server" ([student.server]). In no stage's fingerprint (stages read
    # model and scratch only): switching engines recomputes nothing
    engine: Annotated[str, AfterValidator(_student_engine)] = "hf"
    server: StudentServer = Field(default_factory=StudentServer)  # engine "server" only


class EvalSection(_Strict):
    splits: list[str] = Field(default_factory=lambda: ["test", "test-rare", "test-deep"])
    batch_size: int = Field(64, ge=1)
    max_new_tokens: int = Field(256, ge=1)


class Config(_Strict):
    # names of registered methods (nesyloop.methods.registry), run in this order
    methods: list[MethodName] = Field(
        default_factory=lambda: ["zero-shot", "answer-ft", "std-cot"])
    run: RunSection = Field(default_factory=RunSection)
    task: TaskSection = Field(default_factory=TaskSection)
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    student: StudentSection = Field(default_factory=StudentSection)
    train: TrainSettings = Field(default_factory=TrainSettings)
    # per-method overrides of [train], e.g. [method_train.answer-ft] epochs = 1
    method_train: dict[MethodName, dict[str, Any]] = Field(default_factory=dict)
    eval: EvalSection = Field(default_factory=EvalSection)
    nesycd: NesycdSettings = Field(default_factory=NesycdSettings)
    fdd: FddSettings = Field(default_factory=FddSettings)
    joined: JoinedSettings = Field(default_factory=JoinedSettings)

    @model_validator(mode="after")
    def _check_dev_for_stopping(self) -> Config:
        if self.fdd.min_dev_gain is not None and "dev" not in self.eval.splits:
            raise ValueError("fdd.min_dev_gain needs 'dev' in eval.splits")
        return self

    @model_validator(mode="after")
    def _check_round_splits(self) -> Config:
        if self.fdd.min_dev_gain is not None and "dev" not in (self.fdd.round_splits or ["dev"]):
            raise ValueError("fdd.min_dev_gain needs 'dev' in fdd.round_splits")
        if self.joined.from_round > max(1, self.fdd.rounds):
            raise ValueError(f"joined.from_round ({self.joined.from_round}) is after the last "
                             f"round (fdd.rounds = {self.fdd.rounds})")
        return self

    @model_validator(mode="after")
    def _check_bench_splits(self) -> Config:
        from .tasks.bench.settings import SPLITS

        bad = [s for s in self.eval.splits if s not in SPLITS]
        if self.task.name != "bazaar" and bad:
            raise ValueError(f"eval.splits: {bad[0]!r} is not a split of task "
                             f"{self.task.name!r} (its splits: {', '.join(SPLITS)})")
        return self

    @model_validator(mode="after")
    def _check_dataset_teacher(self) -> Config:
        from .methods.registry import dataset_teacher_error

        msg = dataset_teacher_error(self.teacher.backend, self.methods)
        if msg:
            raise ValueError(msg)
        return self

    def train_for(self, *methods: str) -> TrainSettings:
        """[train] with the methods' overrides applied in order (validated when the config
        loads): ``train_for("fdd", "nesycd+fdd")`` is fdd's, then the joined loop's own."""
        over: dict[str, Any] = {}
        for m in methods:
            over.update(self.method_train.get(m) or {})  # type: ignore[call-overload]
        return TrainSettings.model_validate({**self.train.model_dump(), **over}) if over \
            else self.train


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML of a config file; a missing, unreadable, non-UTF-8 or malformed file is a
    one-line ConfigError naming the file (and the line, where there is one)."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file (give a .toml file)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # a BOM (Windows editors)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
                          f"save the config as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"line (\d+)", str(err))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise ConfigError(f"{where}: invalid TOML ({err})") from None


def _builtin(name: str) -> dict[str, Any]:
    text = resources.files("nesyloop.configs").joinpath(f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def _explain(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"] if p != "[key]") or "<root>"
    if e["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if e["type"] == "missing":
        return f"{source}: missing key '{key}'"
    if not e["loc"]:  # a check across sections
        return f"{source}: {e['msg'].removeprefix('Value error, ')}"
    if key.endswith("api_key_env"):  # never echo what might be a secret
        return f"{source}: key '{key}': {e['msg'].removeprefix('Value error, ')}"
    msg = e["msg"].removeprefix("Value error, ")
    return f"{source}: key '{key}': {msg} (got {e.get('input')!r})"


def quick_replaced(path: str | Path | None) -> list[str]:
    """The keys of a config file that ``--quick`` replaces with other values (``key: yours ->
    quick's``); empty for the built-in default, whose sizes the preset is meant to shrink."""
    if path is None:
        return []
    out: list[str] = []

    def walk(user: dict[str, Any], quick: dict[str, Any], key: str) -> None:
        for k, q in quick.items():
            if k not in user:
                continue
            name = f"{key}.{k}" if key else k
            if isinstance(q, dict) and isinstance(user[k], dict):
                walk(user[k], q, name)
            elif user[k] != q:
                out.append(f"{name} = {user[k]!r} -> {q!r}")

    walk(_read_toml(Path(path)), _builtin("quick"), "")
    return out


def load_config(
    path: str | Path | None = None,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load a config: the built-in default (the main job) when ``path`` is None; ``quick``
    layers the tiny smoke-test preset on top (it makes no accuracy claim; it wins over the
    file's own sizes: :func:`quick_replaced` lists them)."""
    from .config_checks import check_limits, check_raw, check_shapes

    if path is None:
        raw, source = _builtin("default"), "default config"
    else:
        raw, source = _read_toml(Path(path)), str(path)
    if quick:
        raw = _merge(raw, _builtin("quick"))
    if overrides:
        raw = _merge(raw, overrides)
    if (bad := check_raw(raw)) is not None:
        raise ConfigError(f"{source}: {bad}")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(err, source)) from None
    for method, over in cfg.method_train.items():
        try:
            cfg.train_for(method)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(p) for p in e["loc"])
            raise ConfigError(f"{source}: key 'method_train.{method}.{key}': {e['msg']}") from None
    if (bad := check_limits(cfg) or check_shapes(cfg)) is not None:
        raise ConfigError(f"{source}: {bad}")
    return cfg
