"""Deciding held tool calls under Pilot: the real receiver, the in-process simulated
platform (`--demo`, whose tools carry JSON Schemas), a real tool server behind
`--forward-to`. The JSON editor (`e`), and dialogs whose call is settled without them."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Button, Label

from console.config import ForwardSettings
from console.core.gate import OperatorDecision
from console.core.policy import Policy, ToolRule
from console.core.tools import RAW_ARGUMENTS_KEY
from console.tui.screens.approve import (
    EditArgumentsScreen,
    JsonArea,
    arguments_problem,
    editable_text,
    schema_problems,
    schema_summary,
)
from console.tui.widgets.prompt import PromptScreen
from tests.helpers.tool_server import recording_tool_server
from tests.helpers.tui import (
    ONE_HELD,
    SIZE,
    decision_in_history,
    demo_app,
    record_notifications,
    type_text,
    wait_for,
    wait_for_pending,
)

pytestmark = pytest.mark.e2e  # runs the whole simulated platform (--demo)

# The demo assistant's check_availability tool, as the simulated platform sends it.
DEMO_SCHEMA = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "description": "ISO date, e.g. 2026-02-17"},
        "reason": {"type": "string"},
    },
    "required": ["date"],
}


def editor_state(dialog: EditArgumentsScreen) -> tuple[str, bool]:
    """(the line under the editor, whether Send is enabled)."""
    return str(dialog.query_one("#edit-problem", Label).content), not dialog.query_one("#edit-send", Button).disabled


async def open_editor(pilot, app) -> EditArgumentsScreen:
    await pilot.press("e")
    return await wait_for(pilot, lambda: isinstance(app.screen, EditArgumentsScreen) and app.screen, what="the editor")


async def test_edit_is_a_json_editor_checked_against_the_schema_and_the_tool_runs_with_the_edit(settings):
    async with recording_tool_server() as tools:
        settings.forward = ForwardSettings(to=tools.url)
        app = demo_app(settings, policy=ONE_HELD)
        async with app.run_test(size=SIZE) as pilot:
            target = await wait_for_pending(pilot, app)
            assert target.name == "check_availability"
            # The schema the platform sent with the call reached the held call.
            assert target.arguments_schema == DEMO_SCHEMA
            original = dict(target.arguments)
            dialog = await open_editor(pilot, app)
            area = dialog.query_one(JsonArea)
            # Pretty-printed, on several lines; nothing selected, so typing does not wipe it.
            assert area.text == json.dumps(original, indent=2)
            assert area.has_focus and area.selection.is_empty and area.cursor_location == (0, 0)
            assert "date*: string" in str(dialog.query_one("#edit-schema", Label).content)
            assert editor_state(dialog) == ("✓ fits the tool's schema", True)

            await pilot.press("x")  # one stray key: the arguments are still there, now invalid
            assert area.text == "x" + json.dumps(original, indent=2)
            problem, can_send = editor_state(dialog)
            assert problem.startswith("✗ Not valid JSON: line 1, column 1") and not can_send
            await pilot.press("ctrl+s")  # refused while invalid: the dialog stays
            await pilot.pause(0.1)
            assert app.screen is dialog

            area.text = '{"date": 20260218}'  # checked live against the schema
            await pilot.pause(0.05)
            assert editor_state(dialog) == (
                "✗ Does not fit the tool's schema: date: expected string, not integer.",
                False,
            )
            area.text = '{"reason": "checkup"}'
            await pilot.pause(0.05)
            assert editor_state(dialog) == ("✗ Does not fit the tool's schema: date: required, missing.", False)

            area.text = '{\n  "date": "2026-02-18",\n  "reason": "checkup"\n}'
            await pilot.pause(0.05)
            assert editor_state(dialog)[1]
            area.move_cursor((1, 17))
            await type_text(pilot, "X")  # still one keystroke at a time: a valid edit stays valid
            assert json.loads(area.text)["date"] == "2026-0X2-18"
            await pilot.press("backspace", "ctrl+s")
            await wait_for(pilot, lambda: app.screen is app.main, what="the editor closed")

            edited = {"date": "2026-02-18", "reason": "checkup"}
            tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
            assert (tool["decision"], tool["by"]) == ("edited", "operator")
            # The tool server ran the tool with the edited arguments, not the agent's.
            await wait_for(pilot, lambda: tools.arguments_of(target.tool_call_id) is not None, what="the tool run")
            assert tools.arguments_of(target.tool_call_id) == edited != original
            # The transcript shows what ran.
            transcript = app.main.transcripts[target.call_id].plain()
            assert "check_availability(date=2026-02-18, reason=checkup)" in transcript
            assert f"date={original['date']}" not in transcript


async def test_escape_leaves_the_call_waiting(settings):
    app = demo_app(settings, policy=ONE_HELD)
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        dialog = await open_editor(pilot, app)
        dialog.query_one(JsonArea).text = '{"date": "2030-01-01"}'
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main, what="the editor closed")
        assert app.service.gate.get(target.tool_call_id) is not None  # still waiting, undecided


@pytest.mark.parametrize(
    ("key", "dialog_type", "on_timeout", "said"),
    [
        ("o", PromptScreen, "approve", "was approved by timeout: the policy's on_timeout (approve)"),
        ("r", PromptScreen, "override", "was overridden by timeout: the policy's on_timeout (override)"),
        ("e", EditArgumentsScreen, "reject", "was rejected by timeout: the policy's on_timeout (reject)"),
    ],
)
async def test_a_dialog_whose_call_times_out_closes_and_says_what_happened(
    settings, key, dialog_type, on_timeout, said
):
    rule = ToolRule(
        action="hold",
        timeout_seconds=4,
        on_timeout=on_timeout,
        result='{"slots": []}' if on_timeout == "override" else None,
    )
    app = demo_app(settings, policy=Policy(tools={"default": rule, "lookup_patient": ToolRule(action="approve")}))
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        notes = record_notifications(app)
        await pilot.press(key)
        dialog = await wait_for(pilot, lambda: isinstance(app.screen, dialog_type) and app.screen, what="the dialog")
        countdown = dialog.query_one("#prompt-countdown", Label)
        assert "s left, then" in str(countdown.content)
        await type_text(pilot, "too late")
        # Closed by itself once the policy's default applied, saying what that was.
        await wait_for(pilot, lambda: app.screen is app.main, timeout=10, what="the dialog to close")
        warnings = [message for severity, message in notes if severity == "warning"]
        assert len(warnings) == 1 and f"check_availability {said}" in warnings[0], notes
        assert "Nothing from this dialog was sent." in warnings[0]
        tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
        assert tool["by"] == "timeout"


async def test_a_call_decided_elsewhere_closes_the_open_dialog(settings):
    app = demo_app(settings, policy=ONE_HELD)
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        notes = record_notifications(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="the reject dialog")
        # Another console, or `voice-console decide`, through the same gate.
        assert app.service.gate.resolve(target.tool_call_id, OperatorDecision("approved"))
        await wait_for(pilot, lambda: app.screen is app.main, what="the dialog to close")
        assert any(
            "check_availability was already approved by an operator elsewhere" in message for _, message in notes
        ), notes
        tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
        assert (tool["decision"], tool["by"]) == ("approved", "operator")


# --- the schema check on its own ------------------------------------------------------------------


def test_schema_problems_types_enum_required_and_nesting():
    schema = {
        "type": "object",
        "required": ["when", "party"],
        "additionalProperties": False,
        "properties": {
            "when": {"type": "string"},
            "party": {"type": "integer"},
            "kind": {"enum": ["cleaning", "checkup"]},
            "paid": {"type": "boolean"},
            "note": {"type": ["string", "null"]},
            "slots": {
                "type": "array",
                "items": {"type": "object", "required": ["at"], "properties": {"at": {"type": "string"}}},
            },
        },
    }
    assert (
        schema_problems(
            {"when": "Tue", "party": 2, "kind": "checkup", "note": None, "slots": [{"at": "09:30"}]}, schema
        )
        == []
    )
    assert schema_problems({"when": "Tue", "party": 2.0}, schema) == []  # 2.0 is an integer in JSON Schema
    assert schema_problems(
        {"when": 3, "party": True, "kind": "surgery", "paid": 1, "extra": 1, "slots": [{}, {"at": 930}]}, schema
    ) == [
        "when: expected string, not integer",
        "party: expected integer, not boolean",
        'kind: must be one of "cleaning", "checkup"',
        "paid: expected boolean, not integer",
        "extra: not a parameter of this tool",
        "slots[0].at: required, missing",
        "slots[1].at: expected string, not integer",
    ]
    assert schema_problems({}, schema) == ["when: required, missing", "party: required, missing"]
    assert schema_problems({"x": 1}, {"type": "object"}) == []  # no properties: anything goes
    # The schema comes from the platform: an odd one is never a crash, nor a reason to refuse.
    odd = {"type": 5, "required": True, "properties": [], "enum": [], "items": 3, "additionalProperties": "no"}
    assert schema_problems({"a": [1]}, odd) == [] == schema_problems([1], {"type": "array", "items": odd})
    assert (
        schema_summary({"type": "object", "properties": {"a": 1, "b": {"type": [None, "string"]}}, "required": "a"})
        == "Parameters (* required): a: any, b: string"
    )
    assert schema_problems([], {"type": "object"}) == ["the arguments: expected object, not array"]


def test_arguments_problem_explains_json_and_shape():
    assert arguments_problem('{"date": "2026-02-18"}', DEMO_SCHEMA) == ({"date": "2026-02-18"}, None)
    assert arguments_problem('{"date": ', None)[1] == "Not valid JSON: line 1, column 10: Expecting value."
    assert arguments_problem("[1, 2]", None)[1] == "The arguments must be a JSON object ({…}), not array."
    many = {"type": "object", "required": ["a", "b", "c", "d", "e"]}
    assert arguments_problem("{}", many)[1] == (
        "Does not fit the tool's schema: a: required, missing; b: required, missing; c: required, missing; and 2 more."
    )


def test_the_editor_starts_from_what_the_agent_sent():
    assert (
        editable_text({"date": "2026-02-17", "slots": [1]}) == '{\n  "date": "2026-02-17",\n  "slots": [\n    1\n  ]\n}'
    )
    # Arguments the model cut off are shown as the text it sent, to be fixed, not as a wrapper object.
    assert editable_text({RAW_ARGUMENTS_KEY: '{"date": "2026-02'}) == '{"date": "2026-02'
    assert schema_summary(DEMO_SCHEMA) == "Parameters (* required): date*: string, reason: string"
    assert (
        schema_summary({"type": "object", "properties": {"kind": {"enum": ["a", "b"]}}})
        == 'Parameters (* required): kind: "a"|"b"'
    )
    assert schema_summary(None) == "The platform sent no schema for this tool: any JSON object is accepted."


async def test_the_editor_colours_json_with_or_without_tree_sitter():
    from textual.app import App

    class EditorOnly(App[None]):
        def compose(self):
            yield JsonArea('{\n  "date": "2026-02-17", "party": 3, "paid": true\n}', language="json")

    async with EditorOnly().run_test(size=(60, 6)) as pilot:
        await pilot.pause()
        line = pilot.app.query_one(JsonArea).render_line(1)
        colours = {segment.text: segment.style.color for segment in line if segment.text.strip() and segment.style}
        key, value, number, literal, punctuation = (
            colours['"date"'],
            colours['"2026-02-17"'],
            colours["3"],
            colours["true"],
            colours[": "],
        )
        assert len({key, value, number, literal, punctuation}) == 5  # keys, strings, numbers, literals apart
