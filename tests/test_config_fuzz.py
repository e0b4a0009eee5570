"""Every TOML loader in the house, fed arbitrary files: valid, or one clean error naming the file.

The documents are built from the loaders' own pydantic models (the real sections
and keys, the values their Literals allow, so validation reaches the deep
validators), mixed at any depth with arbitrary TOML values of every type, random
keys, inline tables and arrays of tables. Each is written out as TOML text and
read back by the real loader from a file; arbitrary bytes (most not UTF-8) are
fed too. Anything but a valid result or the loader's own error is a bug (a
traceback for the user). CI runs 80 examples per case, a second or two each;
VOICE_CONSOLE_LONG=1 runs thousands.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import types
from datetime import UTC, date, datetime, time, timedelta, timezone
from inspect import isclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from console.config import ConfigError, Settings, load_settings
from console.core.policy import Policy, ToolRule, load_policy
from console.simulator.scenarios import Scenario, ScenarioError, load_scenario
from console.tui.themes import LoadedTheme, ThemeFile, ThemeFileError, load_theme_file

LONG = os.environ.get("VOICE_CONSOLE_LONG", "") not in ("", "0")
EXAMPLES = int(os.environ.get("VOICE_CONSOLE_FUZZ_EXAMPLES", "3000" if LONG else "80"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

# ------------------------------------------------------------------ TOML text from Python values


def _string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_inline(item) for item in value) + "]"
    return "{" + ", ".join(f"{_string(key)} = {_inline(item)}" for key, item in value.items()) + "}"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _emit(lines: list[str], path: tuple[str, ...], table: dict[str, Any], inline_tables: bool) -> None:
    nested = []
    for key, value in table.items():
        if isinstance(value, dict) and not inline_tables or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_string(key)} = {_inline(value)}")
    for key, value in nested:
        header = ".".join(_string(part) for part in (*path, key))
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"[[{header}]]" if isinstance(value, list) else f"[{header}]")
            _emit(lines, (*path, key), item, inline_tables)


def toml_text(doc: dict[str, Any], *, inline_tables: bool = False) -> str:
    """`doc` as TOML: sub-tables as [headers] (or { inline }), lists of tables as [[arrays of tables]]."""
    lines: list[str] = []
    _emit(lines, (), doc, inline_tables)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ strategies

MODELS = (Settings, Policy, ThemeFile, Scenario)


def _field_names() -> list[str]:
    names: set[str] = set()
    pending: list[type[BaseModel]] = list(MODELS)
    while pending:
        model = pending.pop()
        for name, field in model.model_fields.items():
            names.add(name)
            pending.extend(_models_in(field.annotation))
    return sorted(names)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=24)
keys = st.one_of(st.sampled_from(_field_names() + ["default", "book_appointment", "x"]), text)
timezones = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
scalars = st.one_of(
    text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-5, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(timezones=timezones),
    st.dates(),
    st.times(),
)
anything = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
# Strings the models' validators accept somewhere, so documents get past the first check.
plausible = st.sampled_from(
    [
        "",
        "hold",
        "approve",
        "reject",
        "override",
        "http://127.0.0.1:9",
        "https://example.test/",
        "ftp://x",
        "+14155550142",
        "+10000",
        "US",
        "gb",
        "ZZ",
        "#4AA3FF",
        "red",
        "rgb(1,2,3)",
        "not-a-colour",
        "{result}",
        "{unknown}",
        "{",
        "x.db",
        "NORMAL",
        "FULL",
        "sha256",
        "hex",
        "say",
        "tools",
        "end",
        "book",
        '{"ok": true}',
    ]
)
_cache: dict[Any, st.SearchStrategy[Any]] = {}


def shaped(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of the type a field declares, now and then anything else instead."""
    if annotation not in _cache:
        # one_of picks among distinct strategies: four of the declared type to one of anything.
        _cache[annotation] = st.one_of(*(_typed(annotation) for _ in range(4)), anything)
    return _cache[annotation]


def _typed(annotation: Any) -> st.SearchStrategy[Any]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _typed(args[0])
    if origin in (Union, types.UnionType):
        return st.one_of([_typed(arg) for arg in args if arg is not type(None)])
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(shaped(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(keys, shaped(args[1]), max_size=3)
    if isclass(annotation) and issubclass(annotation, BaseModel):
        return table_of(annotation)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(min_value=-2, max_value=70000)
    if annotation is float:
        return st.one_of(st.floats(min_value=-1, max_value=1e4), st.sampled_from([0.0, 0.5, 15.0, math.inf, math.nan]))
    if annotation in (str, Path):
        return st.one_of(plausible, text)
    return anything


def _default(field: FieldInfo) -> st.SearchStrategy[Any]:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return st.just(value.model_dump(exclude_none=True, mode="json"))
    return st.nothing() if value is None or value is PydanticUndefined else st.just(value)


def table_of(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    # None (which TOML cannot hold) marks a key left out; the field's default keeps documents valid often.
    fields = st.fixed_dictionaries(
        {
            name: st.one_of(st.none(), _default(field), shaped(field.annotation))
            for name, field in model.model_fields.items()
        }
    )
    unknown = st.one_of(*(st.just({}) for _ in range(4)), st.dictionaries(keys, anything, max_size=1))
    return st.builds(
        lambda known, extra: {**extra, **{k: v for k, v in known.items() if v is not None}}, fields, unknown
    )


def documents(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(table_of(model), table_of(model), st.dictionaries(keys, anything, max_size=5))


def toml_files(model: type[BaseModel]) -> st.SearchStrategy[str]:
    def written(doc: dict[str, Any], inline: bool) -> str:
        written_text = toml_text(doc, inline_tables=inline)
        tomllib.loads(written_text)  # the generator writes valid TOML, so the loader's validation is reached
        return written_text

    return st.builds(written, documents(model), st.booleans())


def _spliced(doc: dict[str, Any], at: int, junk: bytes) -> bytes:
    encoded = toml_text(doc).encode()
    at %= len(encoded) + 1
    return encoded[:at] + junk + encoded[at:]


# Bytes: anything, and TOML with a byte sequence that is not UTF-8 spliced in.
raw_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(
        _spliced,
        documents(Settings),
        st.integers(min_value=0),
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]),
    ),
)

# ------------------------------------------------------------------ the checks


def _clean_config_error(exc: ConfigError, file: Path) -> None:
    message = str(exc)
    assert str(file) in message, message
    assert "\n" not in message, message  # one paragraph, whatever the keys hold
    assert "Traceback" not in message


def check_settings(file: Path) -> None:
    try:
        loaded = load_settings(file, env={}, overrides={"receiver": {"port": 9000}}, flags={"receiver.port": "--port"})
    except ConfigError as exc:
        _clean_config_error(exc, file)
        return
    assert isinstance(loaded, Settings) and loaded.source == file
    # What the receiver sends as JSON from the settings must be JSON.
    json.dumps(loaded.vapi.assistant_request.assistant, allow_nan=False)
    json.dumps(loaded.retell.call_inbound.model_dump(), allow_nan=False)


def check_policy(file: Path) -> None:
    try:
        policy = load_policy(file)
    except ConfigError as exc:
        _clean_config_error(exc, file)
        return
    assert policy.rule_for("anything").action in ("hold", "approve", "reject", "override")


def check_theme(file: Path) -> None:
    # The catalogue adds the file's name to ThemeFileError's line (ThemeProblem).
    try:
        assert isinstance(load_theme_file(file, user=True), LoadedTheme)
    except ThemeFileError as exc:
        assert str(exc)


def check_scenario(file: Path) -> None:
    try:
        assert isinstance(load_scenario(file), Scenario)
    except ScenarioError as exc:
        assert str(file) in str(exc), str(exc)


CASES = {
    "settings": (Settings, check_settings),
    "policy": (Policy, check_policy),
    "theme": (ThemeFile, check_theme),
    "scenario": (Scenario, check_scenario),
}


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "fuzzed.toml"


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_toml_document_loads_or_is_refused_cleanly(case: str, target: Path) -> None:
    model, check = CASES[case]

    @FUZZ
    @given(content=toml_files(model))
    def run(content: str) -> None:
        target.write_text(content, encoding="utf-8")
        check(target)

    run()


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_bytes_load_or_are_refused_cleanly(case: str, target: Path) -> None:
    check = CASES[case][1]

    @settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
    @given(content=raw_bytes)
    def run(content: bytes) -> None:
        target.write_bytes(content)
        check(target)

    run()


def _errors(model: type[BaseModel], doc: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The validation errors of `doc` read back from its TOML text; None when it is valid."""
    try:
        model.model_validate(tomllib.loads(toml_text(doc)))
    except ValidationError as exc:
        return list(exc.errors())
    return None


def test_the_generator_reaches_deep_validation() -> None:
    """The strategies are not vacuous: they find valid documents of several tables, documents that
    fail only four tables down, and rules that fail only their cross-field check (each takes tens of
    examples; 1000 without a hit would mean the generator lost its way)."""
    search = settings(max_examples=1000, deadline=None, database=None, phases=[Phase.generate])  # no shrinking
    find(
        documents(Settings),
        lambda doc: (
            _errors(Settings, doc) is None
            and sum(isinstance(value, dict) and bool(value) for value in doc.values()) >= 2
        ),
        settings=search,
    )
    find(
        documents(Settings),
        lambda doc: any(
            error["loc"][:3] == ("vapi", "webhook", "hmac")
            and len(error["loc"]) == 4
            and error["type"] != "extra_forbidden"
            for error in _errors(Settings, doc) or []
        ),
        settings=search,
    )
    find(
        table_of(ToolRule),
        lambda rule: any("needs a `result`" in error["msg"] for error in _errors(ToolRule, rule) or []),
        settings=search,
    )
