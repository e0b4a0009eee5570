"""Deciding a held tool call with new arguments (`e`): a multi-line JSON editor,
pretty-printed, checked as it is typed against the tool's JSON Schema when the
platform sent one (Vapi: `toolWithToolCallList[].function.parameters`).

`schema_problems` is a small check of its own (no JSON Schema library is a
dependency): `type` (one or a list), `enum`, `required`, `properties`,
`additionalProperties: false` and array `items`, recursively. Anything else in a
schema (formats, patterns, ranges, combinators) is not checked: the tool server
still has the last word. `settled_sentence` says what happened to a call that was
decided without the dialog that was open for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, TextArea

from console.core.events import ToolDecided
from console.core.gate import PendingCall
from console.core.tools import RAW_ARGUMENTS_KEY
from console.tui.widgets.panes import short_id
from console.tui.widgets.prompt import HeldCallStatus

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
MAX_PROBLEMS_SHOWN = 3
# dict or list: the containers a JSON schema keyword may hold.
_C = TypeVar("_C", dict[str, Any], list[Any])


# --- the check --------------------------------------------------------------------------------


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return next((name for name, kinds in JSON_TYPES.items() if isinstance(value, kinds)), type(value).__name__)


def _has_type(value: Any, name: str) -> bool:
    if name not in JSON_TYPES:
        return True  # a type this check does not know: not held against the value
    if isinstance(value, bool):
        return name == "boolean"  # JSON has no 0/1 booleans, nor true/false numbers
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, JSON_TYPES[name])


def _member(schema: dict[str, Any], key: str, kind: type[_C]) -> _C:
    """`schema[key]` when it is a `kind` (dict or list), else an empty one: schemas from the wire may be anything."""
    value = schema.get(key)
    return value if isinstance(value, kind) else kind()


def _declared_types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    return [name for name in declared if isinstance(name, str)] if isinstance(declared, list) else []


def _same_json(value: Any, option: Any) -> bool:
    return value == option and isinstance(value, bool) == isinstance(option, bool)  # 1 is not true


def schema_problems(value: Any, schema: Any, where: str = "") -> list[str]:
    """What is wrong with `value` under `schema`, one sentence each; [] when it fits.
    A schema of an unexpected shape (it comes from the platform) is never an error here."""
    if not isinstance(schema, dict):
        return []
    label = where or "the arguments"
    types = _declared_types(schema)
    if types and not any(_has_type(value, name) for name in types):
        return [f"{label}: expected {' or '.join(types)}, not {json_type(value)}"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and not any(_same_json(value, option) for option in enum):
        return [f"{label}: must be one of {', '.join(json.dumps(option, default=str) for option in enum)}"]
    problems: list[str] = []
    if isinstance(value, dict):
        properties = _member(schema, "properties", dict)
        required = _member(schema, "required", list)
        for name in required:
            if isinstance(name, str) and name not in value:
                problems.append(f"{_path(where, name)}: required, missing")
        for name, item in value.items():
            if name in properties:
                problems += schema_problems(item, properties[name], _path(where, name))
            elif schema.get("additionalProperties") is False:
                problems.append(f"{_path(where, name)}: not a parameter of this tool")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{where or 'arguments'}[{index}]")
    return problems


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def arguments_problem(text: str, schema: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the arguments, None) when `text` is a JSON object that fits `schema`, else (None, why not)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            return None, f"Not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}."
        return None, f"Not valid JSON: {exc}."
    if not isinstance(value, dict):
        return None, f"The arguments must be a JSON object ({{…}}), not {json_type(value)}."
    problems = schema_problems(value, schema) if schema else []
    if problems:
        more = len(problems) - MAX_PROBLEMS_SHOWN
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        return None, f"Does not fit the tool's schema: {shown}."
    return value, None


def schema_summary(schema: dict[str, Any] | None) -> str:
    """One line: each parameter with its type, required ones marked with *."""
    if not schema or not isinstance(schema.get("properties"), dict):
        return "The platform sent no schema for this tool: any JSON object is accepted."
    required = _member(schema, "required", list)
    parts = []
    for name, spec in schema["properties"].items():
        spec = spec if isinstance(spec, dict) else {}
        if isinstance(spec.get("enum"), list):
            kind = "|".join(json.dumps(option, default=str) for option in spec["enum"])
        else:
            kind = "|".join(_declared_types(spec)) or "any"
        parts.append(f"{name}{'*' if name in required else ''}: {kind}")
    return "Parameters (* required): " + ", ".join(parts) if parts else "The tool takes no parameters."


def editable_text(arguments: dict[str, Any]) -> str:
    """The arguments pretty-printed; arguments the platform sent as broken JSON come back as that text, to fix."""
    raw = arguments.get(RAW_ARGUMENTS_KEY) if len(arguments) == 1 else None
    if isinstance(raw, str):
        return raw
    return json.dumps(arguments, indent=2, ensure_ascii=False)


def settled_sentence(event: ToolDecided, pending: PendingCall | None = None) -> str:
    """What happened to a tool call that was decided without this console's dialog."""
    outcome = event.result if event.result is not None else event.error
    said = f" ({_clip(outcome)})" if outcome else ""
    if event.by == "timeout":
        rule = f"the policy's on_timeout ({pending.on_timeout})" if pending is not None else "the policy's on_timeout"
        return f"{event.name} was {event.decision} by timeout: {rule} applied when its time ran out{said}."
    if event.by == "operator":
        return (
            f"{event.name} was already {event.decision} by an operator elsewhere (another console or `decide`){said}."
        )
    return f"{event.name} was {event.decision} ({event.by}){said}."


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the editor ---------------------------------------------------------------------------------


# String (a key when a colon follows), number, true/false, null: the names the
# TextArea themes style for tree-sitter's JSON highlights.
_JSON_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*"?)(?P<colon>\s*:)?|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r"|(?P<boolean>\btrue\b|\bfalse\b)|(?P<null>\bnull\b)"
)
_HIGHLIGHTED_LINES = 2000  # beyond this, plain text: arguments are rarely this long


class JsonArea(TextArea):
    """A TextArea for JSON. With tree-sitter (`textual[syntax]`) it highlights as a code
    editor does; without it (the default install) a small tokenizer colours strings,
    keys, numbers and literals the same way, so the editor never falls back to plain."""

    def _build_highlight_map(self) -> None:  # Textual's hook (private): called after every edit
        super()._build_highlight_map()
        if self.is_syntax_aware or self.language != "json":
            return
        highlights = self._highlights
        for row, line in enumerate(self.document.lines[:_HIGHLIGHTED_LINES]):
            for match in _JSON_TOKEN.finditer(line):
                if match.group("string") is not None:
                    kind = "json.label" if match.group("colon") else "string"
                    start, end = match.span("string")
                else:
                    kind = "json.null" if match.lastgroup == "null" else str(match.lastgroup)
                    start, end = match.span()
                # Highlights are byte offsets into the UTF-8 line.
                highlights[row].append((len(line[:start].encode()), len(line[:end].encode()), kind))


class EditArgumentsScreen(ModalScreen[dict[str, Any] | None]):
    """Dismisses with the edited arguments (a JSON object that fits the tool's schema),
    or None when cancelled or when the call was settled meanwhile."""

    BINDINGS = [
        Binding(
            "ctrl+s", "send", "Send edited", tooltip="run the tool with these arguments (only when they are valid)"
        ),
        Binding("escape", "cancel", "Cancel", tooltip="close without deciding; the call keeps waiting"),
    ]
    DEFAULT_CSS = """
    EditArgumentsScreen { align: center middle; }
    #edit-box {
        width: 96; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    #edit-schema { color: $text-muted; width: 100%; }
    #edit-arguments { height: auto; min-height: 5; max-height: 12; }
    #edit-problem { width: 100%; height: auto; color: $success; }
    #edit-problem.-invalid { color: $error; }
    #prompt-countdown { color: $warning; }
    #edit-buttons { height: auto; }
    #edit-buttons Button { margin-right: 2; }
    #edit-help { color: $text-muted; }
    """

    def __init__(self, pending: PendingCall, settled: Callable[[PendingCall], str | None] | None = None) -> None:
        super().__init__()
        self.pending = pending
        self._settled = settled
        self.arguments: dict[str, Any] | None = None  # the valid arguments as typed now
        self.problem: str | None = None

    def compose(self) -> ComposeResult:
        pending = self.pending
        with Vertical(id="edit-box") as box:
            box.border_title = f"Edit {pending.name} · call {short_id(pending.call_id)}"
            yield Label(schema_summary(pending.arguments_schema), id="edit-schema", markup=False)
            yield JsonArea(
                editable_text(pending.arguments),
                language="json",
                soft_wrap=True,
                show_line_numbers=True,
                tab_behavior="focus",
                id="edit-arguments",
            )
            yield Label("", id="edit-problem", markup=False)
            yield HeldCallStatus(pending, self._settled, id="prompt-countdown")
            with Horizontal(id="edit-buttons"):
                yield Button("Send edited (ctrl+s)", id="edit-send", variant="primary")
                yield Button("Cancel (esc)", id="edit-cancel")
            yield Label("ctrl+s: send (runs the tool) · escape: cancel · tab: the buttons", id="edit-help")

    def on_mount(self) -> None:
        self._check()
        self.query_one(JsonArea).focus()  # the cursor at the start, nothing selected

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self._check()

    def _check(self) -> None:
        self.arguments, self.problem = arguments_problem(self.query_one(JsonArea).text, self.pending.arguments_schema)
        schema_note = "fits the tool's schema" if self.pending.arguments_schema else "valid JSON (no schema to check)"
        label = self.query_one("#edit-problem", Label)
        label.update(f"✗ {self.problem}" if self.problem else f"✓ {schema_note}")
        label.set_class(self.problem is not None, "-invalid")
        self.query_one("#edit-send", Button).disabled = self.problem is not None

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "edit-send":
            self.action_send()
        else:
            self.action_cancel()

    def action_send(self) -> None:
        self._check()
        if self.arguments is None:
            self.app.bell()  # the reason is already on screen, under the editor
            return
        self.dismiss(self.arguments)

    def action_cancel(self) -> None:
        self.dismiss(None)
