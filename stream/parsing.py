"""Content to template with Drain3, one miner per partition, and snapshots that are plain data.

Drain3's own persistence is off: it pickles the whole tree with jsonpickle (which can rebuild
arbitrary objects) on every template change. A snapshot here is orjson of the clusters (id, size,
template tokens); `restore` re-inserts them into a fresh Drain tree with Drain3's own insertion
routine, so the tree is the one the clusters would have grown, without stale branches.
"""

from __future__ import annotations

import configparser
import hashlib
from importlib import resources
from pathlib import Path
from typing import Literal

import orjson
import structlog
from drain3 import TemplateMiner
from drain3.drain import LogCluster
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rationanomaly.stream import prefilter
from rationanomaly.stream.records import Template

log = structlog.get_logger(__name__)

SNAPSHOT_FORMAT = "rationanomaly.drain3/1"

# Drain3 keeps every template it makes unless capped, and a line family with random tokens makes
# one per line: each partition's miner is capped (least recently used templates go; one that
# returns is re-mined under the same content-hash id). `parsing.max_clusters: null` lifts it.
DEFAULT_MAX_TEMPLATES = 5_000

# Distinct masked contents a miner remembers the cluster of (TemplateParser.parse); when full it
# starts again, so lines with unmasked variables cost a bounded dict, not one entry per line.
_SEEN_MAX = 4096


class MaskRule(BaseModel):
    """One masking rule, spelt as in drain3.ini: matches of `regex_pattern` become `<mask_with>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    regex_pattern: str
    mask_with: str

    @model_validator(mode="after")
    def _compiles(self) -> MaskRule:
        try:
            MaskingInstruction(self.regex_pattern, self.mask_with)
        except Exception as exc:  # re.error, with the rule named
            raise ValueError(f"masking rule {self.mask_with!r} is not a valid regex: {exc}") from None
        return self


class ProfileParsing(BaseModel):
    """What a format profile tunes in template mining for its logs (FormatProfile.parsing).

    A system's lines have their own variables (a proxy's "1.2 KB", a launchd job name) and their
    own shape (short lines whose one differing word is the event): its profile may add masking
    rules, which run before the masking file's, and set Drain's similarity, depth and delimiters.
    What a user sets under `parsing` themselves wins over the profile's values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    masking: tuple[MaskRule, ...] = ()
    sim_th: float | None = Field(None, gt=0, le=1)
    depth: int | None = Field(None, ge=3)
    extra_delimiters: tuple[str, ...] | None = None


class ParsingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Drain3 ships 0.4. At 0.7 two lines share a template only if 70% of their tokens agree
    # (masked values count as agreeing). Mean grouping accuracy on the 16 loghub samples 0.766 ->
    # 0.816, none lower (bench/parsing_accuracy.py). A profile may tune sim_th, depth and
    # extra_delimiters for its logs (ProfileParsing): with the built-in profiles' tuning, 0.944.
    sim_th: float = Field(0.7, gt=0, le=1)
    depth: int = Field(4, ge=3)
    max_children: int = Field(100, ge=2)
    max_clusters: int | None = Field(DEFAULT_MAX_TEMPLATES, ge=1)  # None: unbounded; else least recently used go
    extra_delimiters: tuple[str, ...] = ()
    parametrize_numeric_tokens: bool = True
    masking_file: Path | None = None  # None: the packaged stream/drain3.ini
    # The profile's own rules, run before the masking file's; set by `tuned_by` from the profile
    # the detector runs with (DetectorSettings does it), not meant to be written by hand.
    profile_masking: tuple[MaskRule, ...] = ()

    def tuned_by(self, tuning: ProfileParsing | None) -> ParsingSettings:
        """These settings with a profile's tuning under them: each of sim_th, depth and
        extra_delimiters the user did not set comes from the profile where it sets one, else is
        the default; the profile's masking rules replace any earlier profile's. So applying it
        again changes nothing, and another profile's tuning replaces this one's."""
        user_set = set(self.model_fields_set)
        update: dict[str, object] = {"profile_masking": () if tuning is None else tuning.masking}
        for name in ("sim_th", "depth", "extra_delimiters"):
            if name not in user_set:
                value = None if tuning is None else getattr(tuning, name)
                update[name] = type(self).model_fields[name].default if value is None else value
        tuned = self.model_copy(update=update)
        # What the profile filled in stays "not set by the user", so a later profile replaces it.
        object.__setattr__(tuned, "__pydantic_fields_set__", user_set)
        return tuned


class MaskingConfigError(ValueError):
    """The masking file is missing or malformed."""


class SnapshotError(ValueError):
    """Snapshot bytes that are not a template-miner snapshot this version can read."""


def template_id(text: str) -> str:
    """A template's identity across miners, partitions and restarts: a hash of its text.

    >>> template_id("Receiving block blk_<NUM> src: /<IP>:<NUM>")
    't23ae00b77348ad64'
    """
    return "t" + hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


class Masking(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[tuple[str, str], ...]  # (regex, mask name), applied in order
    prefix: str = "<"
    suffix: str = ">"


def load_masking(path: Path | None = None) -> Masking:
    """The [MASKING] section of a Drain3-style ini: `masking` (JSON list), `mask_prefix/suffix`."""
    if path is None:
        text = resources.files("rationanomaly.stream").joinpath("drain3.ini").read_text(encoding="utf-8")
        where = "stream/drain3.ini"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MaskingConfigError(f"masking file {path}: {exc.strerror}") from None
        where = str(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=where)
    except configparser.Error as exc:
        raise MaskingConfigError(f"{where}: {exc}") from None
    stray = [s for s in parser.sections() if s != "MASKING"]
    if stray:
        raise MaskingConfigError(
            f"{where}: only [MASKING] is read here; move {stray} to ParsingSettings "
            "(e.g. RATIONANOMALY_PARSING__SIM_TH) or delete them"
        )
    if not parser.has_option("MASKING", "masking"):
        raise MaskingConfigError(f"{where}: needs a [MASKING] section with a `masking` JSON list")
    try:
        entries = orjson.loads(parser.get("MASKING", "masking"))
        rules = tuple((e["regex_pattern"], e["mask_with"]) for e in entries)
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise MaskingConfigError(
            f'{where}: `masking` must be a JSON list of {{"regex_pattern": ..., "mask_with": ...}}: {exc}'
        ) from None
    masking = Masking(
        rules=rules,
        prefix=parser.get("MASKING", "mask_prefix", fallback="<"),
        suffix=parser.get("MASKING", "mask_suffix", fallback=">"),
    )
    for pattern, name in rules:
        try:
            MaskingInstruction(pattern, name)
        except Exception as exc:  # re.error, with the rule named
            raise MaskingConfigError(f"{where}: masking rule {name!r} is not a valid regex: {exc}") from None
    return masking


def _miner_config(settings: ParsingSettings, masking: Masking) -> TemplateMinerConfig:
    config = TemplateMinerConfig()
    config.drain_sim_th = settings.sim_th
    config.drain_depth = settings.depth
    config.drain_max_children = settings.max_children
    config.drain_max_clusters = settings.max_clusters
    config.drain_extra_delimiters = list(settings.extra_delimiters)
    config.parametrize_numeric_tokens = settings.parametrize_numeric_tokens
    config.masking_instructions = [MaskingInstruction(p, n) for p, n in masking.rules]
    config.mask_prefix = masking.prefix
    config.mask_suffix = masking.suffix
    return config


class _SnapshotSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sim_th: float
    depth: int
    max_children: int
    max_clusters: int | None
    extra_delimiters: tuple[str, ...]
    parametrize_numeric_tokens: bool
    masking: Masking


class _Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["rationanomaly.drain3/1"]
    settings: _SnapshotSettings
    clusters_counter: int = Field(ge=0)
    # (cluster id, size, template tokens), least recently used first
    clusters: list[tuple[int, int, list[str]]]


class TemplateParser:
    """One Drain3 miner (one partition's). Not thread-safe, like Drain3 itself."""

    def __init__(self, settings: ParsingSettings, masking: Masking | None = None) -> None:
        self._settings = settings
        if masking is None:
            masking = load_masking(settings.masking_file)
            if settings.profile_masking:
                own = tuple((r.regex_pattern, r.mask_with) for r in settings.profile_masking)
                masking = masking.model_copy(update={"rules": own + masking.rules})
        self._masking = masking
        self._miner = TemplateMiner(persistence_handler=None, config=_miner_config(settings, self._masking))
        # The hot path calls the masker and Drain directly: TemplateMiner.add_log_message also
        # builds a result dict and joins the template text on every line.
        self._drain = self._miner.drain
        masker = self._miner.masker
        # Drain3's masker calls a method per rule and rebuilds "<NAME>" each time: the same
        # substitutions, in the same order, as bound `sub`s with their replacement made once.
        # Each rule comes with a test of what every match of it needs in the line (a UUID's "-",
        # a hex number's "0x"; stream/prefilter.py): a line without it cannot change, and skips
        # the regex. None: the rule always runs.
        self._subs = tuple(
            (mi.regex.sub, masker.mask_prefix + mi.mask_with + masker.mask_suffix, prefilter.check(mi.regex))
            for mi in masker.masking_instructions
        )
        # cluster id -> (the template tokens the Template was made from, the Template)
        self._templates: dict[int, tuple[tuple[str, ...], Template]] = {}
        # Masked content -> (its cluster, that cluster's Template), for contents Drain3 last put
        # in a cluster without changing anything. Drain3's answer for a content depends only on
        # the prefix tree and the templates, and those change only when a line creates a cluster
        # or changes a template; such a line empties this memo. Until then, a content seen before
        # goes where it went before and changes nothing, so a hit does only what Drain3 would
        # have done besides searching: count the line in the cluster and touch it in the LRU.
        self._seen: dict[str, tuple[LogCluster, Template]] = {}

    @property
    def size(self) -> int:
        """Number of templates (clusters) the miner holds."""
        return len(self._drain.id_to_cluster)

    def _mask(self, content: str) -> str:
        for sub, mask, may_match in self._subs:
            if may_match is None or may_match(content):
                content = sub(mask, content)
        return content

    def parse(self, content: str) -> Template:
        for sub, mask, may_match in self._subs:  # _mask, inlined: it runs once per line
            if may_match is None or may_match(content):
                content = sub(mask, content)
        seen = self._seen.get(content)
        if seen is not None:
            cluster = seen[0]
            cluster.size += 1
            self._drain.id_to_cluster[cluster.cluster_id]  # noqa: B018 - the LRU touch Drain3 makes
            return seen[1]
        cluster, change = self._drain.add_log_message(content)
        tokens = cluster.log_template_tokens
        known = self._templates.get(cluster.cluster_id)
        # Drain3 replaces the tokens tuple when a template changes, so identity is a full check.
        template = known[1] if known is not None and known[0] is tokens else self._template(cluster)
        if change != "none" or len(self._seen) >= _SEEN_MAX:
            self._seen.clear()
        else:
            self._seen[content] = (cluster, template)
        return template

    def match(self, content: str) -> Template | None:
        """The template `content` fits, without learning from it (None: no template fits)."""
        cluster = self._drain.match(self._mask(content), full_search_strategy="fallback")
        return None if cluster is None else self._template(cluster)

    def templates(self) -> list[Template]:
        clusters = self._drain.id_to_cluster
        # `.get`, not `.values()`: reading through `[]` would reorder Drain3's LRU cache.
        return [self._template(clusters.get(cid)) for cid in list(clusters.keys())]

    def _template(self, cluster: LogCluster) -> Template:
        tokens = cluster.log_template_tokens
        known = self._templates.get(cluster.cluster_id)
        # Drain3 replaces the tokens tuple when a template changes, so identity is a full check.
        if known is not None and known[0] is tokens:
            return known[1]
        text = " ".join(tokens)
        template = Template(id=template_id(text), text=text)
        if len(self._templates) >= 2 * self.size + 64:
            self._forget_evicted()
        self._templates[cluster.cluster_id] = (tokens, template)
        return template

    def _forget_evicted(self) -> None:
        live = self._drain.id_to_cluster
        self._templates = {cid: entry for cid, entry in self._templates.items() if cid in live}

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        drain = self._drain
        clusters = drain.id_to_cluster
        order = getattr(clusters, "_LRUCache__order", None)  # cachetools' LRU order, oldest first
        ids = list(order) if order is not None else list(clusters.keys())
        data = {
            "format": SNAPSHOT_FORMAT,
            "settings": self._fingerprint().model_dump(mode="json"),
            "clusters_counter": drain.clusters_counter,
            "clusters": [
                [cid, clusters.get(cid).size, list(clusters.get(cid).log_template_tokens)] for cid in ids
            ],
        }
        return orjson.dumps(data)

    @classmethod
    def restore(cls, data: bytes, settings: ParsingSettings) -> TemplateParser:
        try:
            snap = _Snapshot.model_validate(orjson.loads(data))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise SnapshotError(f"not a {SNAPSHOT_FORMAT} snapshot: {exc}") from None
        ids = [c[0] for c in snap.clusters]
        if len(set(ids)) != len(ids) or any(not 0 < cid <= snap.clusters_counter for cid in ids):
            raise SnapshotError("snapshot cluster ids must be unique and within 1..clusters_counter")
        parser = cls(settings)
        if snap.settings != parser._fingerprint():
            # Still usable: the clusters are re-inserted under the new settings.
            changed = sorted(
                k for k, v in snap.settings.model_dump().items() if parser._fingerprint().model_dump()[k] != v
            )
            log.warning("snapshot_settings_differ", changed=changed)
        drain = parser._drain
        restored: list[LogCluster] = []
        for cid, size, tokens in snap.clusters:  # least recently used first, as the LRU expects
            cluster = LogCluster(tokens, cid)
            cluster.size = size
            drain.id_to_cluster[cid] = cluster
            restored.append(cluster)
        # Creation order, as the miner grew them: the prefix tree's branches and each leaf's
        # candidate order (which decides ties) then come out as they were.
        for cluster in sorted(restored, key=_cluster_id):
            if cluster.cluster_id in drain.id_to_cluster:
                drain.add_seq_to_prefix_tree(drain.root_node, cluster)
        drain.clusters_counter = snap.clusters_counter
        return parser

    def _fingerprint(self) -> _SnapshotSettings:
        s = self._settings
        return _SnapshotSettings(
            sim_th=s.sim_th,
            depth=s.depth,
            max_children=s.max_children,
            max_clusters=s.max_clusters,
            extra_delimiters=s.extra_delimiters,
            parametrize_numeric_tokens=s.parametrize_numeric_tokens,
            masking=self._masking,
        )


def _cluster_id(cluster: LogCluster) -> int:
    return cluster.cluster_id

