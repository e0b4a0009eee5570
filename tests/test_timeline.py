"""The barge-in timeline model (console/core/timeline.py), from hand-built events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console.core.events import (
    BargeIn,
    CallEnded,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
)
from console.core.timeline import MAX_INTERVALS, CallTimeline, TimelineBook, column_of, lane_cells

T0 = datetime(2026, 2, 17, 9, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def common(seconds: float, call_id: str = "c1") -> dict:
    return {"at": at(seconds), "provider": "vapi", "call_id": call_id}


def test_turn_latency_is_caller_stop_to_agent_start():
    timeline = CallTimeline("c1")
    for event in [
        SpeechStarted(role="assistant", **common(0)),
        SpeechStopped(role="assistant", **common(3)),
        SpeechStarted(role="user", **common(4)),
        SpeechStopped(role="user", **common(6)),
        SpeechStarted(role="assistant", **common(6.82)),
        SpeechStopped(role="assistant", **common(9)),
        SpeechStarted(role="user", **common(10)),
        SpeechStopped(role="user", **common(11)),
        SpeechStarted(role="assistant", **common(11.45)),
    ]:
        timeline.apply(event)
    assert [round(turn.latency_ms) for turn in timeline.turns] == [820, 450]
    last, middle = timeline.latency_summary()
    assert round(last) == 450 and round(middle) == 635
    assert [(i.start, i.stop) for i in timeline.lanes["user"]] == [(at(4), at(6)), (at(10), at(11))]
    assert timeline.speaking("assistant") and not timeline.speaking("user")


def test_barge_in_time_to_stop_is_mark_to_agent_speech_stopped():
    timeline = CallTimeline("c1")
    for event in [
        SpeechStarted(role="assistant", **common(0)),
        SpeechStarted(role="user", **common(2.0)),  # the caller talks over the agent
        BargeIn(cut_text="our hours are", source="speech-overlap", **common(2.0)),
    ]:
        timeline.apply(event)
    (mark,) = timeline.barge_ins
    assert mark.time_to_stop_ms is None  # the agent is still talking
    timeline.apply(SpeechStopped(role="assistant", **common(2.35)))
    assert round(mark.time_to_stop_ms) == 350 and mark.cut_text == "our hours are"
    # The caller's own turn ends, the agent answers: a normal turn latency after the barge-in.
    timeline.apply(SpeechStopped(role="user", **common(4.0)))
    timeline.apply(SpeechStarted(role="assistant", **common(4.6)))
    assert [round(turn.latency_ms) for turn in timeline.turns] == [600]
    assert [round(v) for v in timeline.time_to_stop_summary()] == [350, 350]


def test_a_barge_in_reported_after_the_agent_stopped_counts_from_the_mark():
    timeline = CallTimeline("c1")
    for event in [
        SpeechStarted(role="assistant", **common(0)),
        SpeechStopped(role="assistant", **common(5.0)),
        BargeIn(source="user-interrupted", **common(5.4)),  # reported 400 ms late
    ]:
        timeline.apply(event)
    assert timeline.barge_ins[0].time_to_stop_ms == 0.0
    # A barge-in long after the agent stopped cannot be settled by an old interval.
    timeline.apply(BargeIn(source="user-interrupted", **common(30)))
    assert timeline.barge_ins[1].time_to_stop_ms is None


def test_transcripts_stand_in_for_missing_speech_events():
    timeline = CallTimeline("c1")
    for event in [
        TranscriptPartial(role="user", text="I would", **common(1)),
        TranscriptPartial(role="user", text="I would like", **common(1.5)),
        TranscriptFinal(role="user", text="I would like a cleaning", **common(2)),
        TranscriptFinal(role="assistant", text="Sure.", **common(2.7)),
    ]:
        timeline.apply(event)
    assert [(i.start, i.stop) for i in timeline.lanes["user"]] == [(at(1), at(2))]
    assert [round(turn.latency_ms) for turn in timeline.turns] == [700]
    # Once real speech events arrive for a role, its transcripts no longer draw.
    timeline.apply(SpeechStarted(role="user", **common(5)))
    timeline.apply(TranscriptFinal(role="user", text="ok", **common(5.5)))
    assert timeline.speaking("user")


def test_call_end_closes_open_intervals_and_freezes_the_window():
    timeline = CallTimeline("c1")
    timeline.apply(SpeechStarted(role="assistant", **common(1)))
    timeline.apply(CallEnded(reason="customer-ended-call", **common(8)))
    assert not timeline.speaking("assistant")
    assert timeline.window_end(at(500)) == at(8)


def test_lanes_are_bounded_and_the_book_evicts_old_calls():
    timeline = CallTimeline("c1")
    for i in range(MAX_INTERVALS + 50):
        timeline.apply(SpeechStarted(role="user", **common(i)))
        timeline.apply(SpeechStopped(role="user", **common(i + 0.5)))
    assert len(timeline.lanes["user"]) == MAX_INTERVALS
    book = TimelineBook(max_calls=3)
    changed = book.apply([SpeechStarted(role="user", **common(0, f"call-{n}")) for n in range(5)])
    assert changed == {f"call-{n}" for n in range(5)}
    assert len(book) == 3 and book.get("call-0") is None and book.get("call-4") is not None


def test_lane_cells_and_columns():
    intervals = [i for i in CallTimeline("x").lanes["user"]]  # empty
    assert lane_cells(intervals, at(0), at(60), 60) == [False] * 60
    timeline = CallTimeline("c1")
    timeline.apply(SpeechStarted(role="user", **common(10)))
    timeline.apply(SpeechStopped(role="user", **common(15)))
    timeline.apply(SpeechStarted(role="user", **common(30.2)))
    timeline.apply(SpeechStopped(role="user", **common(30.3)))  # a short burst still shows
    timeline.apply(SpeechStarted(role="user", **common(55)))  # open: runs to the edge
    cells = lane_cells(timeline.lanes["user"], at(0), at(60), 60)
    assert [i for i, filled in enumerate(cells) if filled] == [10, 11, 12, 13, 14, 30, 55, 56, 57, 58, 59]
    assert column_of(at(30), at(0), at(60), 60) == 30
    assert column_of(at(60), at(0), at(60), 60) == 59
    assert column_of(at(61), at(0), at(60), 60) is None


def test_a_barge_in_on_transcript_only_lanes_is_not_given_a_made_up_time_to_stop():
    timeline = CallTimeline("c1")
    for event in [
        TranscriptFinal(role="assistant", text="Of course. We have tables at", **common(1)),
        TranscriptFinal(role="user", text="Actually, make it six.", **common(1)),
        BargeIn(source="llm-response-superseded", cut_text="seven", **common(1.1)),
    ]:
        timeline.apply(event)
    (mark,) = timeline.barge_ins
    assert mark.time_to_stop_ms is None and not mark.measured
    assert timeline.time_to_stop_summary() == (None, None)
    # The webhooks' word times arrive: the agent's real stop settles it.
    timeline.apply(SpeechStarted(role="assistant", **common(0.5)))
    timeline.apply(SpeechStopped(role="assistant", **common(1.4)))
    assert mark.measured and round(mark.time_to_stop_ms) == 300


def test_an_agent_that_talked_over_the_caller_says_so():
    from console.tui.widgets.timeline import render_timeline

    timeline = CallTimeline("c1")
    for event in [
        SpeechStarted(role="assistant", **common(0)),
        SpeechStopped(role="assistant", **common(3.2)),  # its queued audio ran out
        BargeIn(source="talked-over", **common(0.8)),  # settled then, at the caller's start
    ]:
        timeline.apply(event)
    (mark,) = timeline.barge_ins
    assert mark.source == "talked-over" and round(mark.time_to_stop_ms) == 2400
    text = render_timeline(timeline, at(10), 100, 12).plain
    assert "agent talked over the caller for 2400 ms" in text


def test_a_call_through_a_tap_shows_each_sides_level():
    from console.tui.widgets.timeline import level_cells, render_timeline

    timeline = CallTimeline("c1")
    timeline.apply(SpeechStarted(role="assistant", **common(0)))
    timeline.apply(SpeechStopped(role="assistant", **common(2)))
    levels = {"assistant": [(at(0.5), 9000.0), (at(1.0), 150.0)], "user": [(at(1.5), 3000.0)]}
    cells = level_cells(levels["assistant"], at(-58), at(2), 60)
    assert "█" in cells and "▁" in cells and cells[0] is None  # loud, then quiet; nothing before the audio
    text = render_timeline(timeline, at(2), 70, 12, levels).plain
    caller_lane, agent_lane = text.splitlines()[:2]
    assert "█" in agent_lane and any(glyph in caller_lane for glyph in "▅▆▇")


def test_the_operators_cut_off_is_its_own_mark_not_a_barge_in():
    from console.core.events import Raw
    from console.core.timeline import OPERATOR_CUT_OFF
    from console.tui.widgets.timeline import CUT, render_timeline

    timeline = CallTimeline("c1")
    timeline.apply(SpeechStarted(role="assistant", **common(0)))
    timeline.apply(Raw(type=OPERATOR_CUT_OFF, data={"dropped_ms": 1800, "cut": "sentence-2"}, **common(1.2)))
    timeline.apply(SpeechStopped(role="assistant", **common(1.2)))
    assert not timeline.barge_ins and timeline.time_to_stop_summary() == (None, None)
    (cut,) = timeline.cut_offs
    assert (cut.at, cut.dropped_ms, cut.cut_text) == (at(1.2), 1800.0, "sentence-2")
    lines = render_timeline(timeline, at(2), 100, 12).plain.splitlines()
    assert CUT in lines[2] and "barge-ins 0" in lines[5]
    assert "✂ cut off by the operator  1800 ms of the agent's audio dropped  cut: sentence-2" in lines[6]
