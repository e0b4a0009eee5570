"""Cross-message facts: barge-in (one per interruption), cut text, status order, repeats."""

from datetime import UTC, datetime, timedelta

from console.core.calls import CallTracker
from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Raw,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
)

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kinds(events):
    return [e.kind for e in events]


def common(**kw):
    return {"provider": "vapi", "call_id": "call-1", **kw}


def test_user_speech_over_assistant_is_one_barge_in_even_with_user_interrupted():
    tracker = CallTracker()
    tracker.process([SpeechStarted(at=at(0), role="assistant", **common())])
    out = tracker.process([SpeechStarted(at=at(1.0), role="user", **common())])
    assert kinds(out) == ["speech.started", "barge_in"]
    assert out[1].source == "speech-overlap"
    # Vapi's own user-interrupted for the same moment arrives just after: not a second barge-in.
    assert tracker.process([BargeIn(at=at(1.3), source="user-interrupted", **common())]) == []
    assert tracker.get("call-1").barge_ins == 1


def test_user_interrupted_first_then_overlap_is_still_one():
    tracker = CallTracker()
    tracker.process([SpeechStarted(at=at(0), role="assistant", **common())])
    assert kinds(tracker.process([BargeIn(at=at(1.0), source="user-interrupted", **common())])) == ["barge_in"]
    assert kinds(tracker.process([SpeechStarted(at=at(1.1), role="user", **common())])) == ["speech.started"]
    # A later, separate interruption counts again.
    tracker.process(
        [SpeechStopped(at=at(2), role="user", **common()), SpeechStarted(at=at(5), role="assistant", **common())]
    )
    assert kinds(tracker.process([SpeechStarted(at=at(8), role="user", **common())])) == ["speech.started", "barge_in"]
    assert tracker.get("call-1").barge_ins == 2


def test_user_speech_after_assistant_stopped_is_not_a_barge_in():
    tracker = CallTracker()
    tracker.process(
        [SpeechStarted(at=at(0), role="assistant", **common()), SpeechStopped(at=at(2), role="assistant", **common())]
    )
    assert kinds(tracker.process([SpeechStarted(at=at(3), role="user", **common())])) == ["speech.started"]


def test_cut_text_is_model_output_minus_what_was_spoken():
    tracker = CallTracker()
    tracker.process(
        [
            SpeechStarted(at=at(0), role="assistant", **common()),
            Raw(
                at=at(0),
                type="model-output",
                data={"turnId": "t1", "output": "Your appointment is on Tuesday "},
                **common(),
            ),
            Raw(at=at(0.1), type="model-output", data={"turnId": "t1", "output": "at 3 pm with Dr. Lee."}, **common()),
            Raw(
                at=at(0.5),
                type="assistant.speechStarted",
                data={"text": "Your appointment is on Tuesday", "turn": 1},
                **common(),
            ),
        ]
    )
    out = tracker.process([BargeIn(at=at(1), source="user-interrupted", **common())])
    assert out[0].cut_text == "at 3 pm with Dr. Lee."


def test_status_follows_event_time_not_arrival_order():
    tracker = CallTracker()
    tracker.process([CallStatus(at=at(10), status="ended", ended_reason="customer-ended-call", **common())])
    tracker.process([CallStatus(at=at(1), status="in-progress", **common())])  # late delivery
    state = tracker.get("call-1")
    assert state.status == "ended" and state.ended_reason == "customer-ended-call"


def test_repeated_transcript_finals_are_dropped():
    tracker = CallTracker()
    line = TranscriptFinal(at=at(1), role="user", text="hello", provider="retell", call_id="c")
    assert len(tracker.process([line])) == 1
    assert tracker.process([line]) == []


def test_turn_latency_from_user_stop_to_assistant_start():
    tracker = CallTracker()
    tracker.process(
        [SpeechStopped(at=at(1), role="user", **common()), SpeechStarted(at=at(1.8), role="assistant", **common())]
    )
    assert round(tracker.get("call-1").last_turn_latency_ms) == 800


def test_state_is_bounded():
    tracker = CallTracker(max_calls=10)
    for i in range(50):
        tracker.process([CallStatus(at=at(i), status="ringing", provider="vapi", call_id=f"c{i}")])
    assert len(tracker.calls()) == 10
    assert tracker.get("c49") is not None and tracker.get("c0") is None


def test_ended_is_terminal_even_with_a_coarser_clock():
    tracker = CallTracker()
    # Twilio's completed callback is dated to the second, before the voice webhook's arrival time.
    tracker.process([CallStatus(at=at(10.0), status="ended", ended_reason="completed", **common())])
    tracker.process([CallStatus(at=at(10.4), status="ringing", **common())])
    assert tracker.get("call-1").status == "ended"


def test_an_end_of_call_report_alone_ends_the_call():
    tracker = CallTracker()
    tracker.process(
        [CallStatus(at=at(0), status="in-progress", **common()), SpeechStarted(at=at(1), role="assistant", **common())]
    )
    tracker.process([CallEnded(at=at(30), reason="customer-ended-call", duration_s=30, **common())])
    state = tracker.get("call-1")
    assert state.status == "ended" and state.ended_reason == "customer-ended-call"
    assert not state.speaking
    # A late in-progress status cannot revive it.
    tracker.process([CallStatus(at=at(31), status="in-progress", **common())])
    assert tracker.get("call-1").status == "ended"


def test_an_ended_call_keeps_only_its_summary_after_a_while():
    tracker = CallTracker()
    tracker.process(
        [
            CallStatus(at=at(0), status="in-progress", **common()),
            TranscriptFinal(at=at(5), role="user", text="hello there", **common()),
            BargeIn(at=at(6), **common()),
        ]
    )
    tracker.process([CallStatus(at=at(30), status="ended", ended_reason="customer-ended-call", **common())])
    state = tracker.get("call-1")
    # Within the grace period a late duplicate final is still recognised.
    assert tracker.process([TranscriptFinal(at=at(5), role="user", text="hello there", **common())]) == []
    other = {"provider": "vapi", "call_id": "call-2"}
    tracker.process([CallStatus(at=at(30 + 119), status="in-progress", **other)])
    assert state._finals, "forgotten too early"
    tracker.process([CallStatus(at=at(30 + 121), status="in-progress", **other)])
    assert not state._finals and not state._finals_order and not state._model_output
    assert (state.status, state.ended_reason, state.barge_ins) == ("ended", "customer-ended-call", 1)
    assert tracker.get("call-2") is not None and tracker.get("call-2")._finals is not None


def test_an_utterance_told_by_the_tap_and_again_by_the_webhooks_is_kept_once_a_repeat_twice():
    tracker = CallTracker()

    def final(seconds: float, text: str, source: str | None = None) -> TranscriptFinal:
        return TranscriptFinal(at=at(seconds), role="user", text=text, source=source, **common(provider="retell"))

    live = tracker.process([final(1, "Yes."), final(4, "Book it."), final(9, "Yes.")])  # no source: webhooks
    assert [e.text for e in live] == ["Yes.", "Book it.", "Yes."]
    # The tap's live view of the same three utterances, each a little off in time: all already shown.
    assert tracker.process([final(1.4, "Yes.", "llm-tap"), final(4.2, "Book it.", "llm-tap")]) == []
    assert tracker.process([final(9.3, "Yes.", "llm-tap")]) == []
    # A fourth "Yes." the webhooks have not told is new; one told minutes apart is too.
    assert [e.text for e in tracker.process([final(12, "Yes.", "llm-tap")])] == ["Yes."]
    assert [e.text for e in tracker.process([final(400, "Book it.")])] == ["Book it."]
