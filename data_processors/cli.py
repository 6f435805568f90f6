"""``finmeta data download|import|features|info|list`` (filled in by the data layer)."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Download, import, feature and inspect datasets.", no_args_is_help=True)
