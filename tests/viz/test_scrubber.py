"""Scrubbers: the live slider redraws, the report player holds every frame."""

import re

import pytest

from gradkit.viz.scrubber import Scrubber, in_report_mode


def _draw(fig, value):
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, value])
    ax.set_title(f"epoch {value}")


def test_slider_callback_redraws_for_the_chosen_value():
    scrubber = Scrubber(_draw, [5, 10, 15])
    assert scrubber.shown is None, "nothing is drawn before the slider is shown"
    slider = scrubber.slider
    assert scrubber.shown == 5
    first = scrubber.output.outputs[-1]["data"]["image/png"]
    slider.value = 15
    assert scrubber.shown == 15
    last = scrubber.output.outputs[-1]["data"]["image/png"]
    assert last != first
    assert len(scrubber.output.outputs) == 1, "the old frame is replaced, not appended"


def test_player_embeds_one_distinct_frame_per_value():
    page = Scrubber(_draw, [1, 2, 3, 4], label="step").player_html()
    frames = re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page)
    assert len(set(frames)) == 4
    assert 'max="3"' in page and "step 4" in page
    assert "http" not in page.replace("data:", ""), "the player must not load anything"


def test_display_mode_follows_the_report_flag(monkeypatch):
    monkeypatch.delenv("GRADKIT_REPORT", raising=False)
    assert not in_report_mode()
    monkeypatch.setenv("GRADKIT_REPORT", "1")
    assert in_report_mode()


def test_empty_values_are_refused():
    with pytest.raises(ValueError, match="at least one value"):
        Scrubber(_draw, [])


def test_display_is_the_player_in_report_mode_and_the_live_slider_otherwise(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    scrubber = Scrubber(_draw, [1, 2])
    monkeypatch.setenv("GRADKIT_REPORT", "1")
    scrubber._ipython_display_()
    monkeypatch.setenv("GRADKIT_REPORT", "0")
    scrubber._ipython_display_()
    player, live = shown
    assert "gradkit-scrubber" in player.data
    assert len(set(re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", player.data))) == 2
    assert live.children[0] is scrubber.slider and live.children[1] is scrubber.output
