"""Scrubbers: look at one picture per epoch (or step) and move between them.

A :class:`Scrubber` wraps one drawing function ``draw(fig, value)`` and the values to scrub.

- In a live notebook it is an ipywidgets slider: moving it redraws the figure for that value.
- In the HTML report (``GRADKIT_REPORT=1``, set by ``make report``) it is a kernel-free player:
  every frame pre-rendered to PNG and embedded, with an HTML range input and a few lines of
  inline JavaScript that swap the picture. It needs no kernel, no widget manager and no network.
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
        self._slider = self._output = None
        self.shown: Any = None  # the value of the frame on display (None before the first)

    # -- frames -----------------------------------------------------------------------------
    def render_png(self, value: Any) -> bytes:
        """The frame for ``value`` as PNG bytes."""
        # A constrained layout instead of bbox_inches="tight": same margins, one draw not two.
        fig = plt.figure(figsize=self.figsize, layout="constrained")
        try:
            self.draw(fig, value)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=self.dpi)
        finally:
            plt.close(fig)
        return buffer.getvalue()

    def player_html(self) -> str:
        """A self-contained HTML player: frames inline, a range input, no external resources."""
        uid = f"gk-scrub-{os.getpid()}-{next(_ids)}"
        frames = [
            "data:image/png;base64," + base64.b64encode(self.render_png(v)).decode("ascii")
            for v in self.values
        ]
        labels = [f"{self.label} {v}" for v in self.values]
        last = len(frames) - 1
        return f"""
<div class="gradkit-scrubber" id="{uid}" data-frames="{len(frames)}">
  <div style="font-family:sans-serif;margin:4px 0">
    <input type="range" class="gradkit-scrubber-range" min="0" max="{last}" step="1" value="0"
           style="width:60%;vertical-align:middle" aria-label="{html.escape(self.label)}">
    <span class="gradkit-scrubber-label">{html.escape(labels[0])}</span>
  </div>
  <img class="gradkit-scrubber-frame" src="{frames[0]}" alt="{html.escape(labels[0])}">
  <script>
  (function() {{
    var root = document.getElementById("{uid}");
    var frames = {json.dumps(frames)};
    var labels = {json.dumps(labels)};
    var range = root.querySelector("input"), img = root.querySelector("img"),
        text = root.querySelector(".gradkit-scrubber-label");
    range.addEventListener("input", function() {{
      var i = parseInt(range.value, 10);
      img.src = frames[i]; img.alt = labels[i]; text.textContent = labels[i];
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

            self._output = w.Output()
            self._slider = w.SelectionSlider(
                options=self.values, value=self.values[0], description=self.label,
                continuous_update=False, layout=w.Layout(width="60%"),
            )
            self._slider.observe(lambda change: self._show(change["new"]), names="value")
            self._show(self.values[0])
        return self._slider

    @property
    def output(self):
        """The ipywidgets ``Output`` the slider draws into."""
        self.slider  # noqa: B018 - creates the widgets
        return self._output

    def _show(self, value: Any) -> None:
        from IPython.display import Image

        # Replacing the outputs trait (rather than printing into the Output context) works both
        # in a kernel and in plain Python, where tests drive the slider.
        self._output.outputs = ()
        self._output.append_display_data(Image(self.render_png(value)))
        self.shown = value

    def widget(self):
        """The live slider above its figure, as one ipywidgets box."""
        import ipywidgets as w

        return w.VBox([self.slider, self.output])

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        if in_report_mode():
            display(HTML(self.player_html()))
        else:
            display(self.widget())
