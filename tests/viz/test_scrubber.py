"""Scrubbers: the live slider redraws, the report player holds every frame."""

import re

import pytest

from gradkit.viz.scrubber import Scrubber, in_report_mode


def _draw(fig, value):
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, value])
    ax.set_title(f"epoch {value}")


def test_slider_callback_redraws_the_image_in_place():
    scrubber = Scrubber(_draw, [5, 10, 15])
    assert scrubber.shown is None, "nothing is drawn before the slider is shown"
    slider, image = scrubber.slider, scrubber.image
    assert scrubber.shown == 5
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    slider.value = 15
    assert scrubber.shown == 15
    assert scrubber.image is image, "the same Image widget is updated, never cleared or replaced"
    assert image.value != first
    slider.value = 5
    assert image.value == first, "a frame seen before is shown again unchanged"


def test_slider_follows_a_drag_and_keeps_its_label_whole():
    slider = Scrubber(_draw, [0.005, 0.06], label="learning rate").slider
    assert slider.continuous_update, "the figure must follow the handle while dragging"
    assert slider.description == "learning rate"
    assert slider.style.description_width == "initial", "a fixed width cuts 'learning r…'"


def test_frames_are_drawn_once_and_bounded_by_the_window():
    calls = []
    scrubber = Scrubber(lambda fig, v: (calls.append(v), _draw(fig, v)), [1, 2, 3])
    scrubber.slider.value = 3
    scrubber.slider.value = 1
    scrubber.slider.value = 3
    assert calls == [1, 3], "going back to a frame reuses its PNG"
    assert scrubber.image.layout.max_height == "80vh" and scrubber.image.layout.max_width == "100%"
    assert "max-height:80vh" in scrubber.player_html()


def test_player_embeds_one_distinct_frame_per_value_with_its_controls():
    page = Scrubber(_draw, [1, 2, 3, 4], label="step").player_html()
    frames = re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page)
    assert len(set(frames)) == 4
    assert 'max="3"' in page and "step 4 (4/4)" in page and "step 1 (1/4)" in page
    for control in ("gradkit-scrubber-play", "gradkit-scrubber-prev", "gradkit-scrubber-next"):
        assert f'class="{control}"' in page
    assert "ArrowLeft" in page and "ArrowRight" in page
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
    assert live.children[0] is scrubber.slider and live.children[1] is scrubber.image
