"""Scrubbers: look at one picture per epoch (or step) and move between them.

A :class:`Scrubber` wraps one drawing function ``draw(fig, value)`` and the values to scrub.

- In a live notebook it is an ipywidgets slider above an ``ipywidgets.Image``: moving the slider
  (also while dragging: ``continuous_update=True``) replaces the image's bytes in place, so the
  figure follows the handle without clearing an output area (no flicker, no page jump). Frames
  already drawn are kept, so going back is instant. Each position is drawn on the kernel's main
  thread in the order it arrived (matplotlib's pyplot is not thread-safe), so a first drag over
  frames never drawn lags by their drawing time and ends on the right frame. The slider's label
  keeps its full width.
- In the HTML report (``GRADKIT_REPORT=1``, set by ``make report``) it is a kernel-free player:
  every frame pre-rendered to PNG and embedded, with a range input, play / pause and step
  buttons, the frame label, and the arrow keys, in a few lines of inline JavaScript. It needs no
  kernel, no widget manager and no network.

Either way the picture is bounded by the window (``max-width: 100%``, ``max-height: 80vh``):
a tall figure is scaled down, not cut or scrolled.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt

DrawFn = Callable[[plt.Figure, Any], None]
_ids = itertools.count()
MAX_HEIGHT = "80vh"  # a frame never gets taller than the window: it is scaled down to fit
PLAY_INTERVAL_MS = 700  # the report player's time per frame while playing


def in_report_mode() -> bool:
    """True while ``make report`` executes the notebooks for the HTML export."""
    return os.environ.get("GRADKIT_REPORT", "") not in ("", "0")


class Scrubber:
    """One figure per value of ``values``; a slider chooses which one is shown.

    ``draw(fig, value)`` draws onto an empty figure. ``label`` names the scrubbed quantity
    (``"epoch"``, ``"step"``) and is shown beside the slider.
    """

    def __init__(
        self,
        draw: DrawFn,
        values: Sequence[Any],
        *,
        label: str = "epoch",
        figsize: tuple[float, float] = (7.0, 4.0),
        dpi: int = 80,
    ):
        if len(values) == 0:
            raise ValueError("Scrubber needs at least one value to scrub")
        self.draw, self.values, self.label = draw, list(values), label
        self.figsize, self.dpi = figsize, dpi
        self._slider = self._image = None
        self._frames: dict[int, bytes] = {}  # index -> PNG, drawn on first view
        self.shown: Any = None  # the value of the frame on display (None before the first)

    # -- frames -----------------------------------------------------------------------------
    def render_png(self, value: Any) -> bytes:
        """The frame for ``value`` as PNG bytes (drawn afresh)."""
        # A constrained layout instead of bbox_inches="tight": same margins, one draw not two.
        fig = plt.figure(figsize=self.figsize, layout="constrained")
        try:
            self.draw(fig, value)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=self.dpi)
        finally:
            plt.close(fig)
        return buffer.getvalue()

    def frame(self, index: int) -> bytes:
        """The PNG of ``values[index]``, drawn once and kept."""
        if index not in self._frames:
            self._frames[index] = self.render_png(self.values[index])
        return self._frames[index]

    def frame_labels(self) -> list[str]:
        """``"epoch 5 (2/10)"``: the value and the frame's position, for the player."""
        n = len(self.values)
        return [f"{self.label} {v} ({i + 1}/{n})" for i, v in enumerate(self.values)]

    def player_html(self) -> str:
        """A self-contained HTML player: frames inline, no external resources."""
        uid = f"gk-scrub-{os.getpid()}-{next(_ids)}"
        frames = [
            "data:image/png;base64," + base64.b64encode(self.frame(i)).decode("ascii")
            for i in range(len(self.values))
        ]
        labels = self.frame_labels()
        name = html.escape(self.label)
        return f"""
<div class="gradkit-scrubber" id="{uid}" data-frames="{len(frames)}" tabindex="0"
     aria-label="{name} player: arrow keys step, space plays">
  <div class="gradkit-scrubber-controls" style="font-family:sans-serif;margin:4px 0;
       display:flex;align-items:center;gap:6px;flex-wrap:wrap">
    <button type="button" class="gradkit-scrubber-prev" title="previous {name}"
            aria-label="previous {name}">&#9664;&#9664;</button>
    <button type="button" class="gradkit-scrubber-play" title="play"
            aria-label="play">&#9654;</button>
    <button type="button" class="gradkit-scrubber-next" title="next {name}"
            aria-label="next {name}">&#9654;&#9654;</button>
    <input type="range" class="gradkit-scrubber-range" min="0" max="{len(frames) - 1}" step="1"
           value="0" style="flex:1 1 240px;max-width:480px" aria-label="{name}">
    <span class="gradkit-scrubber-label" style="white-space:nowrap">{html.escape(labels[0])}</span>
  </div>
  <img class="gradkit-scrubber-frame" src="{frames[0]}" alt="{html.escape(labels[0])}"
       style="max-width:100%;max-height:{MAX_HEIGHT};height:auto;width:auto">
  <script>
  (function() {{
    var root = document.getElementById("{uid}");
    var frames = {json.dumps(frames)};
    var labels = {json.dumps(labels)};
    var range = root.querySelector("input"), img = root.querySelector("img"),
        text = root.querySelector(".gradkit-scrubber-label"),
        play = root.querySelector(".gradkit-scrubber-play"), timer = null;
    function show(i) {{
      i = Math.max(0, Math.min(frames.length - 1, i));
      range.value = i; img.src = frames[i]; img.alt = labels[i]; text.textContent = labels[i];
    }}
    function current() {{ return parseInt(range.value, 10); }}
    function pause() {{
      if (timer !== null) {{ clearInterval(timer); timer = null; }}
      play.textContent = "\\u25B6"; play.title = "play"; play.setAttribute("aria-label", "play");
    }}
    function start() {{
      if (current() >= frames.length - 1) show(0);
      play.textContent = "\\u275A\\u275A"; play.title = "pause";
      play.setAttribute("aria-label", "pause");
      timer = setInterval(function() {{
        if (current() >= frames.length - 1) pause(); else show(current() + 1);
      }}, {PLAY_INTERVAL_MS});
    }}
    range.addEventListener("input", function() {{ pause(); show(current()); }});
    play.addEventListener("click", function() {{ if (timer === null) start(); else pause(); }});
    root.querySelector(".gradkit-scrubber-prev").addEventListener("click",
      function() {{ pause(); show(current() - 1); }});
    root.querySelector(".gradkit-scrubber-next").addEventListener("click",
      function() {{ pause(); show(current() + 1); }});
    root.addEventListener("keydown", function(e) {{
      if (e.target === range) return;  // the range input steps with the arrows itself
      var keys = {{ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1}};
      if (e.key in keys) {{ pause(); show(current() + keys[e.key]); }}
      else if (e.key === "Home") {{ pause(); show(0); }}
      else if (e.key === "End") {{ pause(); show(frames.length - 1); }}
      else if (e.key === " " && e.target === root) {{
        if (timer === null) start(); else pause();
      }} else return;
      e.preventDefault();
    }});
  }})();
  </script>
</div>"""

    # -- live widget --------------------------------------------------------------------------
    @property
    def slider(self):
        """The ipywidgets slider (created on first use); setting ``.value`` redraws."""
        if self._slider is None:
            import ipywidgets as w

            self._image = w.Image(format="png", layout=w.Layout(
                max_width="100%", max_height=MAX_HEIGHT, width="auto", height="auto",
                object_fit="contain"))
            self._slider = w.SelectionSlider(
                options=self.values, value=self.values[0], description=self.label,
                continuous_update=True,  # the figure follows a drag, not only the release
                style={"description_width": "initial"},  # the whole label, never "learning r…"
                layout=w.Layout(width="min(100%, 720px)"),
            )
            self._slider.observe(lambda change: self._show(change["new"]), names="index")
            self._show(0)
        return self._slider

    @property
    def image(self):
        """The ipywidgets ``Image`` the slider redraws in place."""
        self.slider  # noqa: B018 - creates the widgets
        return self._image

    def _show(self, index: int) -> None:
        self._image.value = self.frame(index)
        self.shown = self.values[index]

    def widget(self):
        """The live slider above its figure, as one ipywidgets box."""
        import ipywidgets as w

        return w.VBox([self.slider, self.image], layout=w.Layout(max_width="100%"))

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if in_report_mode():
            display(HTML(self.player_html()))
        else:
            display(self.widget())
