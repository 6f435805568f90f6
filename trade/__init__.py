"""The trade stage: paper and live trading with the backtest agent, costs and fills (docs/trade.md)."""
