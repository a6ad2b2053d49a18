"""Export what is on screen (CSV or Parquet) and upload OHLC CSV bars to analyse."""

from __future__ import annotations

import html

import panel as pn
from panel.viewable import Viewer

from engine.errors import UploadError
from engine.upload import MAX_UPLOAD_BYTES, parse_uploads
from ui import services


class DataView(Viewer):
    """Downloads ``ps-export-csv`` / ``ps-export-parquet``; upload ``ps-upload`` with its
    error ``ps-upload-error`` and result ``ps-upload-result``; ``ps-back-live``."""

    title = "Data"

    def __init__(self, app: object, **params):
        super().__init__(**params)
        self.app = app
        self.csv = self._download("csv", "CSV")
        self.parquet = self._download("parquet", "Parquet")
        self.upload = pn.widgets.FileInput(
            accept=".csv", multiple=True, css_classes=["ps-upload"], width=300
        )
        self.result = pn.pane.HTML("", css_classes=["ps-upload-result"])
        self.error = pn.pane.HTML("", css_classes=["ps-upload-error"])
        self.back = pn.widgets.Button(name="Back to live", css_classes=["ps-back-live"], width=200)
        self.upload.param.watch(lambda _: self.analyse(), "value")
        self.back.on_click(lambda _: self.app.back_to_live())

    def _download(self, fmt: str, label: str) -> pn.widgets.FileDownload:
        """The button that downloads the on-screen frame as ``fmt`` (csv or parquet)."""
        return pn.widgets.FileDownload(
            callback=lambda: services.export_bytes(self.app.frame, fmt),
            filename=f"pairstack.{fmt}",
            label=f"Export on-screen data ({label})",
            css_classes=[f"ps-export-{fmt}"],
            button_type="primary",
            width=300,
        )

    def _name(self, kind: str) -> str:
        f = self.app.frame
        return f"{f.pair.replace('/', '-')}_{f.timeframe}.{kind}"

    def on_cache(self, cache: object) -> None:
        self.csv.filename = self._name("csv")
        self.parquet.filename = self._name("parquet")

    def analyse(self) -> None:
        values, names = self.upload.value, self.upload.filename
        if not values:
            return
        if not isinstance(values, list):
            values, names = [values], [names]
        self.error.object = self.result.object = ""
        try:
            bars = parse_uploads(dict(zip(names, values, strict=True)))
            if len(bars) != 2:
                raise UploadError(
                    f"expected the bars of exactly 2 symbols (y then x), got {sorted(bars)}"
                )
        except UploadError as exc:
            self.error.object = f"<p class='ps-error'>Upload refused: {html.escape(str(exc))}</p>"
            return
        y, x = list(bars)
        self.app.show_upload(bars, f"{y}/{x}")
        self.result.object = (
            f"<p class='ps-upload-ok'>Analysing uploaded {y}/{x}: {len(bars[y])} and "
            f"{len(bars[x])} bars ({len(self.app.frame)} aligned). Charts, tests, backtest and "
            "export now use them.</p>"
        )

    def __panel__(self):
        cap = MAX_UPLOAD_BYTES // (1024 * 1024)
        return pn.Column(
            pn.pane.Markdown("**Export** what the charts show (bars, beta, spread, z, position)"),
            pn.Row(self.csv, self.parquet),
            pn.pane.Markdown(
                "**Upload** OHLC CSV (`ts, open, high, low, close, volume`; one file per leg "
                f"named after its symbol, or one file with a `symbol` column; at most {cap} MB "
                "per file). The first symbol is y, the second x."
            ),
            pn.Row(self.upload, self.back),
            self.error,
            self.result,
            sizing_mode="stretch_width",
        )
