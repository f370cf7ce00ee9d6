"""A stand-in for roma-01's executor (`agents/trading_agent.py`), applying its documented
rules to a simulated account: decisions run one by one; an open trades quantity = margin ×
leverage ÷ price after clamping the margin to a single-trade share of the available balance
(50% when flat, 30% otherwise) and the total margin to 80% of the wallet, with a minimum
quantity of 0.001 (raised to it when affordable with a 5% buffer); a close takes
`close_quantity`, or `close_quantity_pct` (0–1, or 0–100 divided by 100), or the whole
position; `hold`/`wait` only log. Where roma-01 would fail (no such position, a quantity past
the position, below the minimum), this raises. It also checks what roma-01 does not: leverage
within the agent's own `max_leverage`."""

from __future__ import annotations

MIN_QUANTITY = 0.001


class ExecutionError(Exception):
    pass


class Executor:
    def __init__(self, account: dict, positions: list[dict], max_leverage: float):
        self.wallet = float(account["total_wallet_balance"])
        self.available = float(account["available_balance"])
        self.max_leverage = max_leverage
        self.positions = {(p["symbol"], p["side"]): dict(p) for p in positions}
        self.log: list[str] = []

    def _price(self, symbol: str) -> float:
        for (sym, _), p in self.positions.items():
            if sym == symbol and float(p.get("mark_price") or 0) > 0:
                return float(p["mark_price"])
        raise ExecutionError(f"no price for {symbol}")

    def _margin_used(self) -> float:
        return sum(float(p["position_amt"]) * float(p.get("mark_price") or 0) / max(1.0, float(p.get("leverage") or 1))
                   for p in self.positions.values())

    def run(self, decisions: list[dict]) -> list[str]:
        for d in decisions:
            self.execute(d)
        return self.log

    def execute(self, d: dict) -> None:
        action, symbol = d["action"], d["symbol"]
        if action in ("hold", "wait"):
            self.log.append(f"{action} {symbol}")
            return
        side = "long" if action.endswith("long") else "short"
        if action.startswith("open_"):
            lev = d["leverage"]
            if not isinstance(lev, int) or lev < 1:
                raise ExecutionError(f"leverage {lev!r} is not an integer ≥ 1")
            if lev > self.max_leverage:
                raise ExecutionError(f"leverage {lev} above the agent's max {self.max_leverage}")
            other = "short" if side == "long" else "long"
            if (symbol, other) in self.positions:
                raise ExecutionError(f"{action} {symbol} against an open {other}")
            price = self._price(symbol)
            flat = not self.positions
            margin = min(float(d["position_size_usd"]), self.available * (0.5 if flat else 0.3))
            margin = min(margin, max(0.0, 0.8 * self.wallet - self._margin_used()))
            qty = margin * lev / price
            if qty < MIN_QUANTITY:
                need = MIN_QUANTITY * price / lev * 1.05
                if need > self.available:
                    raise ExecutionError(f"{action} {symbol}: {qty} below the minimum, {need} not affordable")
                qty, margin = MIN_QUANTITY, need
            p = self.positions.setdefault((symbol, side), {"symbol": symbol, "side": side, "position_amt": 0.0,
                                                           "mark_price": price, "leverage": lev})
            p["position_amt"] = float(p["position_amt"]) + qty
            p["leverage"] = lev
            self.available -= margin
            self.log.append(f"{action} {symbol} {qty:.6f} at {lev}x")
            return
        p = self.positions.get((symbol, side))
        if p is None:
            raise ExecutionError(f"{action} {symbol}: no {side} position")
        held = float(p["position_amt"])
        if d.get("close_quantity") is not None:
            qty = float(d["close_quantity"])
        elif d.get("close_quantity_pct") is not None:
            pct = float(d["close_quantity_pct"])
            qty = held * (pct / 100 if pct > 1 else pct)
        else:
            qty = held
        if qty > held * (1 + 1e-9):
            raise ExecutionError(f"{action} {symbol}: {qty} is more than the {held} held")
        if qty < MIN_QUANTITY:
            raise ExecutionError(f"{action} {symbol}: {qty} below the minimum quantity")
        left = held - qty
        if left <= held * 1e-9:
            del self.positions[(symbol, side)]
        else:
            p["position_amt"] = left
        self.log.append(f"{action} {symbol} {qty:.6f}")
