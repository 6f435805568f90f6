"""``finmeta trade``: paper and live trading with a backtested model; ``finmeta trade status``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from finmeta.errors import ConfigError


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise ConfigError(f"--broker-option {p!r}: use KEY=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def trade(
    target: str = typer.Argument(..., metavar="RUN_DIR_OR_MODEL",
                                 help="A run directory (each window trades its saved model), a model file "
                                      "(with --config), or `status`."),
    folder: str = typer.Argument(None, metavar="RUN_DIR", help="With `status`: a run directory or trade folder."),
    broker: str = typer.Option("paper", "--broker", help="paper, alpaca or ccxt."),
    replay: str = typer.Option(None, "--replay", help="Replay a stored dataset bar by bar with the paper broker "
                                                      "(`run`: the run's own data)."),
    start: str = typer.Option(None, "--start", help="First bar to trade (ISO date; default: the trade period's)."),
    end: str = typer.Option(None, "--end", help="End of the trade (exclusive ISO date)."),
    config: str = typer.Option(None, "--config", help="The config of a model file."),
    agent: str = typer.Option(None, "--agent", help="Which agent of the run directory (when it holds several)."),
    seed: int = typer.Option(None, "--seed", help="Which seed of the run directory (when it holds several)."),
    out: Path = typer.Option(None, "--out", help="Trade folder (default: RUN_DIR/trade/<agent>_seed<k>_<broker>)."),
    max_order_notional: float = typer.Option(None, "--max-order-notional", help="Refuse orders above this notional."),
    max_weight: float = typer.Option(None, "--max-weight", help="Refuse buys that make an asset more than this "
                                                                "fraction of the account."),
    daily_loss_limit: float = typer.Option(None, "--daily-loss-limit", help="Stop trading when the value falls by "
                                                                            "more than this fraction in a day."),
    broker_option: list[str] = typer.Option(None, "--broker-option", help="KEY=VALUE passed to a vendor broker "
                                                                          "(repeatable); keys come from env vars."),
    clear_halt: bool = typer.Option(False, "--clear-halt", help="Resume a trade folder a risk check halted."),
    max_bars: int = typer.Option(None, "--max-bars", help="Process at most this many bars, then stop (resumable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-bar status lines."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (or status) as JSON."),
) -> None:
    """Trade a backtested model bar by bar; `finmeta trade status RUN_DIR` shows the book.

    At each bar: the latest bars, the backtest's observation, the agent's action, the family's order
    rules, risk checks, orders with deterministic client ids, fills reconciled, one SQLite
    transaction. A killed process resumes at the next unprocessed bar (docs/trade.md).

    Example: finmeta trade runs/quickstart --agent ppo --broker paper --replay run
    """
    if target == "status":
        if not folder:
            raise ConfigError("finmeta trade status RUN_DIR: give a run directory or a trade folder")
        show_status(Path(folder), as_json=as_json)
        return
    if folder:
        raise ConfigError(f"unexpected argument {folder!r} (only `finmeta trade status` takes two)")
    from .engine import open_engine
    from .risk import RiskLimits

    limits = RiskLimits(max_order_notional=max_order_notional, max_weight=max_weight,
                        daily_loss_limit=daily_loss_limit)
    eng = open_engine(target, broker=broker, replay=replay, start=start, end=end, config=config, agent=agent,
                      seed=seed, out=out, limits=limits, broker_options=_options(broker_option),
                      echo=(lambda _l: None) if quiet else _echo, clear_halt=clear_halt)
    try:
        summary = eng.run(max_bars=max_bars) if replay is not None else eng.run_live(max_bars=max_bars)
    finally:
        eng.close()
    summary["folder"] = str(eng.folder)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        money = lambda x: "-" if x is None else f"{x:,.2f}"  # noqa: E731
        typer.echo(f"trade folder: {eng.folder}; {summary['bars']} bars processed, value "
                   f"{money(summary['value'])}, cash {money(summary['cash'])}")


def _echo(line: str) -> None:
    typer.echo(line, err=True)


def trade_folders(path: Path) -> list[Path]:
    if (path / "trade.sqlite").is_file():
        return [path]
    found = sorted(p.parent for p in (path / "trade").glob("*/trade.sqlite")) if (path / "trade").is_dir() else []
    if not found:
        raise ConfigError(f"{path}: no trade folder (no trade.sqlite here or under {path / 'trade'}); run "
                          f"`finmeta trade {path} ...` first")
    return found


def status_of(folder: Path, last: int = 5) -> dict:
    """Positions, cash, value, P&L, halt reason and the last bars of one trade folder."""
    import sqlite3

    from .state import TradeState

    try:
        st = TradeState(folder / "trade.sqlite")
    except sqlite3.Error as exc:
        raise ConfigError(f"{folder}: unreadable trade database ({exc})") from None
    try:
        ident = st.get("identity") or {}
        bars = st.bars()
        initial = float(st.get("initial_cash") or 0.0)
        value = bars[-1]["value"] if bars else None
        return {
            "folder": str(folder), "agent": ident.get("agent"), "seed": ident.get("seed"),
            "broker": ident.get("broker"), "bars_processed": len(bars),
            "last_bar": None if not bars else bars[-1]["time"], "cash": (st.account() or {}).get("cash"),
            "value": value, "initial_cash": initial,
            "pnl": None if value is None else value - initial,
            "positions": st.positions(), "halted": st.get("halted"),
            "open_orders": len(st.orders(("new", "partially_filled"))),
            "last_bars": [{k: b[k] for k in ("time", "value", "sent", "filled", "refused", "skipped")}
                          for b in bars[-last:]],
        }
    finally:
        st.close()


def show_status(path: Path, as_json: bool = False) -> None:
    if not path.exists():
        raise ConfigError(f"{path}: no such run directory or trade folder")
    rows = [status_of(f) for f in trade_folders(path)]
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    for s in rows:
        typer.echo(f"{s['folder']}: {s['agent']} seed {s['seed']} on {s['broker']}, {s['bars_processed']} bars, "
                   f"last {s['last_bar']}" + (f"; HALTED: {s['halted']}" if s["halted"] else ""))
        if s["value"] is not None:
            pct = s["pnl"] / s["initial_cash"] if s["initial_cash"] else float("nan")
            typer.echo(f"  value {s['value']:,.2f}  cash {s['cash']:,.2f}  P&L {s['pnl']:+,.2f} ({pct:+.2%})  "
                       f"open orders {s['open_orders']}")
        pos = ", ".join(f"{k} {v:g}" for k, v in s["positions"].items()) or "none"
        typer.echo(f"  positions: {pos}")
        for b in s["last_bars"]:
            typer.echo(f"  {b['time']}  value {b['value']:,.2f}  sent {b['sent']} filled {b['filled']} refused "
                       f"{b['refused']}" + (f"  {b['skipped']}" if b["skipped"] else ""))


def register(app: typer.Typer) -> None:
    app.command("trade")(trade)
