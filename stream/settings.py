"""The detector's one settings root: file, environment, then flags, built once at the entry point.

Each stage receives only its own section and never reads the environment itself.
Environment names are `RATIONANOMALY_<SECTION>__<FIELD>`, e.g.
`RATIONANOMALY_KAFKA__BOOTSTRAP_SERVERS=kafka:9092`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rationanomaly.model.settings import BackendSettings
from rationanomaly.stream.decoding import DecodeSettings
from rationanomaly.stream.parsing import DEFAULT_MAX_TEMPLATES, ParsingSettings  # noqa: F401 (the cap, re-exported)
from rationanomaly.stream.profiles import ProfileSettings, resolve_profile
from rationanomaly.stream.records import JudgeMode, ModelDownPolicy
from rationanomaly.stream.siem import OutputFormat, Publish
from rationanomaly.stream.windows import WindowSettings


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "rationanomaly"
    security_protocol: str | None = None  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    # Anything else librdkafka understands, passed through verbatim (e.g. "ssl.certificate.location").
    extra: dict[str, str] = Field(default_factory=dict)
    # How long a starting detector waits for a broker to answer before it exits non-zero; an
    # outage after the start is ridden out however long it lasts (stream/broker_link.py).
    startup_timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"sasl_mechanism={self.sasl_mechanism} needs kafka.sasl_username and "
                "kafka.sasl_password (RATIONANOMALY_KAFKA__SASL_USERNAME / __SASL_PASSWORD)"
            )
        return self


def librdkafka_config(kafka: KafkaSettings) -> dict[str, str]:
    """The one place Kafka settings become librdkafka's dotted keys."""
    conf: dict[str, str] = {"bootstrap.servers": kafka.bootstrap_servers}
    if kafka.security_protocol:
        conf["security.protocol"] = kafka.security_protocol
    if kafka.sasl_mechanism:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        conf["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password:
        conf["sasl.password"] = kafka.sasl_password.get_secret_value()
    if kafka.ssl_ca_location:
        conf["ssl.ca.location"] = kafka.ssl_ca_location
    conf.update(kafka.extra)
    return conf


class InputSettings(_Section):
    topic: str = "logs"
    decode: DecodeSettings = DecodeSettings()
    poll_batch: int = Field(500, ge=1, le=100_000)
    poll_timeout_s: float = Field(0.2, gt=0)
    # A partition with no new line for this long has its open windows closed (wall clock).
    idle_timeout_s: float = Field(30.0, gt=0)
    # The producers already key each record by its window key (the HDFS block id, the host...):
    # every window's lines share a partition, so the repartition hop (stream/repartition.py) is skipped.
    keyed_by_window: bool = False
    # Partitions of the internal `<group>-repartition` topic when the detector creates it; None:
    # the input topic's count. An existing topic with another count is an error, never resized.
    repartition_partitions: int | None = Field(None, ge=1)
    # How long the repartition topic keeps records: long enough for a partition's next owner to
    # re-read from the oldest open window after a crash, short enough not to keep logs twice.
    repartition_retention_ms: int = Field(7 * 24 * 3_600_000, ge=60_000)


class JudgeSettings(_Section):
    mode: JudgeMode = JudgeMode.TEMPLATE
    max_batch: int = Field(16, ge=1)
    max_wait_ms: int = Field(200, ge=0)
    queue_max: int = Field(2_000, ge=1)  # windows waiting for the model before partitions pause
    queue_low: int = Field(500, ge=0)  # resume below this
    # Retries of a failed or unparseable answer (greedy decoding repeats itself, so few).
    retries: int = Field(1, ge=0)
    # How long a template the model could not judge stays `unknown` before it is asked again.
    unknown_ttl_s: float = Field(300.0, ge=0)
    # Where template-mode answers persist between runs (per model and prompt version); None: memory only.
    cache_file: Path | None = None
    # Cap on template texts per window-mode prompt, so one huge window cannot blow the context.
    window_max_templates: int = Field(64, ge=1)
    # Judged templates kept (least recently used go; one that returns is judged again).
    cache_max_templates: int = Field(100_000, ge=1)
    # While the model is away (unreachable, timing out, 5xx): `wait` holds the windows, pauses
    # the input and retries with backoff, for up to `model_down_deadline_s`, after which they
    # go out `unknown` with the reason; `unknown` publishes them so at once.
    on_model_down: ModelDownPolicy = ModelDownPolicy.WAIT
    model_down_deadline_s: float = Field(600.0, ge=0)
    # In a consumer group, a template is judged by the member owning its partition
    # (stream/template_owners.py); one that met it elsewhere asks and waits this long for the
    # answer, then judges it itself (a silent owner costs one model call twice, never a window).
    remote_wait_s: float = Field(120.0, gt=0)
    # A member losing partitions lets the model call in flight finish, and shares its answers,
    # before their templates' next owner may judge them; it waits this long at most.
    handover_wait_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _low_below_max(self) -> JudgeSettings:
        if self.queue_low >= self.queue_max:
            raise ValueError(
                f"judging.queue_low ({self.queue_low}) must be below judging.queue_max "
                f"({self.queue_max}), or paused partitions would never resume"
            )
        return self


class OutputSettings(_Section):
    topic: str = "verdicts"
    dlq_topic: str = "logs.dlq"
    format: OutputFormat = OutputFormat.NATIVE
    # What `topic` carries: every verdict, or only abnormal ones (a SIEM's alert stream);
    # `publish_unknown` adds or drops the windows the model could not judge, either way.
    publish: Publish = Publish.ALL
    publish_unknown: bool = True
    # A second topic with every verdict (analysts, evaluation) beside a filtered `topic`.
    full_topic: str | None = None
    full_format: OutputFormat = OutputFormat.NATIVE
    exactly_once: bool = False
    transactional_id: str | None = None  # defaults to "<group>-<input topic>"

    @model_validator(mode="after")
    def _topics_apart(self) -> OutputSettings:
        if self.full_topic is not None and self.full_topic in (self.topic, self.dlq_topic):
            raise ValueError(
                f"output.full_topic ({self.full_topic}) must differ from output.topic and "
                "output.dlq_topic, or one topic would carry two streams"
            )
        return self


class CheckpointSettings(_Section):
    dir: Path = Path.home() / ".cache" / "rationanomaly" / "checkpoints"
    interval_s: float = Field(5.0, gt=0)


class StateSettings(_Section):
    """Where the detector keeps its state (stream/state_topics.py, stream/README.md "State topics").

    `kafka`: compacted topics, restored by whichever instance is assigned a partition (the
    default; any number of instances). `local`: checkpoint.dir and judging.cache_file only, for
    one process on one machine.
    """

    store: Literal["kafka", "local"] = "kafka"
    # Topic names; None: "<group>-checkpoints", "<group>-template-verdicts", "<group>-corrections".
    checkpoint_topic: str | None = None
    cache_topic: str | None = None
    corrections_topic: str | None = None
    replication_factor: int = Field(-1, ge=-1)  # -1: the broker's default.replication.factor
    # How long reading a state topic to its end may take at start or on assignment.
    restore_timeout_s: float = Field(60.0, gt=0)

    def topic(self, kind: Literal["checkpoints", "template-verdicts", "corrections"], group_id: str) -> str:
        given = {"checkpoints": self.checkpoint_topic, "template-verdicts": self.cache_topic,
                 "corrections": self.corrections_topic}[kind]  # fmt: skip
        return given or f"{group_id}-{kind}"


class FeedbackSettings(_Section):
    """Operator corrections (stream/feedback.py): read from `topic`, kept in state.corrections_topic."""

    enabled: bool = True
    topic: str | None = None  # None: "<group>-feedback"

    def topic_for(self, group_id: str) -> str:
        return self.topic or f"{group_id}-feedback"


class MetricsSettings(_Section):
    port: int | None = Field(9108, ge=0, le=65535)  # None disables the endpoint


class DetectorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RATIONANOMALY_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    input: InputSettings = InputSettings()
    profile: ProfileSettings = ProfileSettings()
    parsing: ParsingSettings = ParsingSettings()
    windows: WindowSettings = WindowSettings()
    judging: JudgeSettings = JudgeSettings()
    backend: BackendSettings = BackendSettings()
    output: OutputSettings = OutputSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    metrics: MetricsSettings = MetricsSettings()
    state: StateSettings = StateSettings()
    feedback: FeedbackSettings = FeedbackSettings()

    @model_validator(mode="after")
    def _profile_tunes_parsing(self) -> DetectorSettings:
        # The profile's masking rules and Drain settings for its logs, under the user's own
        # `parsing` values: `parsing` then holds what every partition's miner runs with.
        tuned = self.parsing.tuned_by(resolve_profile(self.profile).parsing)
        object.__setattr__(self, "parsing", tuned)  # frozen; this is construction
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (passed as init kwargs) beat the environment, which beats the file.
        return (init_settings, env_settings)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config_file: Path | None = None, **overrides: Any) -> DetectorSettings:
    """File < environment < flags. `overrides` use the nested shape: {"input": {"topic": "x"}}."""
    from_file: dict[str, Any] = {}
    if config_file is not None:
        loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: the top level must be a mapping of sections")
        from_file = loaded
    from_env = DetectorSettings().model_dump(exclude_unset=True)
    merged = _deep_merge(_deep_merge(from_file, from_env), overrides)
    return DetectorSettings(**merged)
