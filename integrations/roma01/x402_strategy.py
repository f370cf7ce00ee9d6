"""Paid strategy advice for roma-01 `main`, through an x402-sidecar buyer.

roma-01's `main` branch has no remote-strategy client. This module is the drop-in: it builds
the `StrategyRequest` from what roma-01's DEX toolkits already return (the account dict and
the position dicts), posts it to the sidecar's outbound port, and hands back decision dicts in
roma-01's own format (`open_long`, `open_short`, `close_long`, `close_short`, `hold`, `wait`),
ready for the trading agent's executor.

The sidecar pays (it holds the buyer wallet, the price caps and the budgets), so this module
needs no x402 SDK, no key and nothing beyond the Python standard library.

    from x402_strategy import StrategyClient, build_strategy_request

    account = await toolkit.get_account_balance()
    positions = await toolkit.get_positions()
    req = build_strategy_request("aster", account, positions, strategy=agent_cfg["strategy"],
                                 agent_id=agent_id, cycle=cycle)
    advice = await StrategyClient("http://127.0.0.1:8403/x402").adecide(req)
    if advice.source in ("paid", "fallback"):
        for d in advice.decisions:        # each one as the executor expects it
            await agent._execute_decision(d)
    else:                                 # nothing usable: roma-01's own local cycle
        ...

`advice.source` says where the advice came from: `paid` (a seller was paid; `advice.tx` is the
settlement transaction), `fallback` (the sidecar's local fallback endpoint answered; nothing
paid), `free` (a seller that did not ask for payment) or `none` (no advice: `advice.error` says
why, and `advice.decisions` is empty). Every decision dict also carries it as `advice_source`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

#: The sidecar's outbound port, as its `outbound.listen` default.
DEFAULT_URL = "http://127.0.0.1:8403/x402"

#: roma-01's executor actions.
ACTIONS = ("open_long", "open_short", "close_long", "close_short", "hold", "wait")

#: The quote asset of each platform's margin (roma-01 labels both USDC; Aster is USDT-margined).
QUOTE_ASSET = {"hyperliquid": "USDC", "aster": "USDT"}

#: Keys of a roma-01 position dict that have their own field in the request.
_POSITION_KEYS = {
    "symbol",
    "side",
    "position_amt",
    "entry_price",
    "mark_price",
    "leverage",
    "unrealized_profit",
}


def _number(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def build_strategy_request(
    platform: str,
    account: Mapping[str, Any],
    positions: Iterable[Mapping[str, Any]],
    *,
    strategy: Mapping[str, Any] | None = None,
    owner: str | None = None,
    agent_id: str | None = None,
    cycle: int | None = None,
) -> dict:
    """The `StrategyRequest` for one agent cycle, from roma-01's toolkit dicts.

    `account` is `get_account_balance()`'s dict (`total_wallet_balance`, `available_balance`,
    `total_unrealized_profit`), `positions` is `get_positions()`'s list (`symbol`, `side`,
    `position_amt` unsigned, `entry_price`, `mark_price`, `leverage`, `unrealized_profit`,
    `liquidation_price`), `strategy` is the agent's `strategy` block of trading_config.yaml
    (`quote_asset`, `risk_profile`, `preference_notes`, `objectives`, `scan_interval_minutes`,
    `default_coins`, `risk_management{max_positions, max_leverage, stop_loss_pct,
    take_profit_pct}`). The shape is the one roma-01's `feature/x402` buyer sends; prices of
    0.0 (Hyperliquid without `entryPx`) are sent as they are: the seller reads them as unknown.
    `owner` (the wallet) is optional: leave it out to keep the address away from the seller.
    """
    platform = platform.lower()
    strategy = dict(strategy or {})
    risk = dict(strategy.get("risk_management") or {})
    quote = strategy.get("quote_asset") or QUOTE_ASSET.get(platform, "USDC")
    body_positions = []
    for p in positions:
        size = _number(p.get("position_amt"))
        if not size:
            continue  # a closed row: roma-01's toolkits skip them too
        entry = {
            "symbol": p["symbol"],
            "size": abs(size),
            "side": p.get("side") or ("long" if size > 0 else "short"),
            "entryPrice": _number(p.get("entry_price")) or 0.0,
            "markPrice": _number(p.get("mark_price")) or 0.0,
            "leverage": _number(p.get("leverage")),
            "unrealized_pnl": _number(p.get("unrealized_profit")),
            "metadata": {k: v for k, v in p.items() if k not in _POSITION_KEYS},
        }
        body_positions.append({k: v for k, v in entry.items() if v is not None})
    req: dict[str, Any] = {
        "account": {
            "platform": platform,
            "balance": {"asset": quote, "amount": _number(account.get("available_balance")) or 0.0},
            "equity": _number(account.get("total_wallet_balance")) or 0.0,
            "positions": body_positions,
            "raw": {"account": dict(account)},
        },
        "preferences": {
            "leverage": _number(risk.get("max_leverage")),
            "risk_tolerance": strategy.get("risk_profile"),
            "time_horizon": f"{strategy.get('scan_interval_minutes', 3)}m",
            "notes": strategy.get("preference_notes"),
        },
        "objectives": strategy.get("objectives"),
        "constraints": _constraints(risk),
        "symbols": list(strategy.get("default_coins") or []),
        "telemetry": {k: v for k, v in {"agentId": agent_id, "cycle": cycle, "platform": platform}.items()
                      if v is not None},
    }
    if owner:
        req["account"]["owner"] = owner
    return req


def _constraints(risk: Mapping[str, Any]) -> list[str]:
    """roma-01's two constraint strings, with the limits the agent's risk_management sets."""
    out = []
    limits = [f"Max positions {risk['max_positions']}" if risk.get("max_positions") is not None else None,
              f"Max leverage {risk['max_leverage']}x" if risk.get("max_leverage") is not None else None]
    stops = [f"Stop loss {risk['stop_loss_pct']}%" if risk.get("stop_loss_pct") is not None else None,
             f"Take profit {risk['take_profit_pct']}%" if risk.get("take_profit_pct") is not None else None]
    for parts in (limits, stops):
        text = " / ".join(x for x in parts if x)
        if text:
            out.append(text)
    return out


@dataclass
class Advice:
    """One cycle's advice: the decisions to execute, and where they came from."""

    decisions: list[dict]
    #: `paid`, `fallback`, `free` or `none` (the sidecar's `X-Strategy-Source`).
    source: str
    #: The settlement transaction of a paid answer.
    tx: str | None = None
    call_id: str | None = None
    #: The whole answer (strategy, payment, metadata, disclaimer), for roma-01's decision log.
    answer: dict = field(default_factory=dict)
    #: Why there is no advice (`source == "none"`): the sidecar's error code, or `unreachable`.
    error: str | None = None
    #: Decisions that were not in roma-01's format, with why (left out of `decisions`).
    dropped: list[str] = field(default_factory=list)

    @property
    def paid(self) -> bool:
        return self.source == "paid"


def _clean(d: Any, max_leverage: int | None) -> tuple[dict | None, str | None]:
    """A decision in roma-01's format, or why not. Leverage is clamped to the agent's own cap."""
    if not isinstance(d, dict):
        return None, "not an object"
    action, symbol = d.get("action"), d.get("symbol")
    if action not in ACTIONS or not isinstance(symbol, str) or not symbol:
        return None, f"unknown action or symbol: {action!r} {symbol!r}"
    out = {"action": action, "symbol": symbol,
           "confidence": _number(d.get("confidence")) or 0.0,
           "reasoning": str(d.get("reasoning") or "")}
    if action in ("open_long", "open_short"):
        lev, margin = _number(d.get("leverage")), _number(d.get("position_size_usd"))
        sl, tp = _number(d.get("stop_loss")), _number(d.get("take_profit"))
        if not lev or lev < 1 or not margin or margin <= 0 or not sl or not tp:
            return None, f"{action} {symbol} lacks leverage, position_size_usd or stops"
        lev = int(lev)
        if max_leverage:
            lev = max(1, min(lev, max_leverage))
        out.update(leverage=lev, position_size_usd=margin, stop_loss=sl, take_profit=tp)
    elif action in ("close_long", "close_short"):
        q = _number(d.get("close_quantity"))
        if q is not None:
            if q <= 0:
                return None, f"{action} {symbol} with close_quantity {q}"
            out["close_quantity"] = q
    return out, None


class StrategyClient:
    """Posts requests to the sidecar's outbound port; `decide` never raises."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 15.0, max_leverage: int | None = None):
        self.url = url
        #: Keep it above the sidecar's `outbound.timeout_ms` (10 s by default).
        self.timeout = timeout
        #: The agent's `risk_management.max_leverage`, applied again to every open.
        self.max_leverage = max_leverage

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "StrategyClient":
        """From roma-01's environment: `X402_OUTBOUND_URL` (the sidecar's outbound port,
        default `DEFAULT_URL`), `REMOTE_TIMEOUT_SECONDS` (roma-01's own setting, default 10;
        this waits 5 s more, since the sidecar's whole call, fallback included, ends first)."""
        env = os.environ if env is None else env
        timeout = _number(env.get("REMOTE_TIMEOUT_SECONDS")) or 10.0
        return cls(env.get("X402_OUTBOUND_URL") or DEFAULT_URL, timeout=timeout + 5.0)

    def decide(self, request: Mapping[str, Any]) -> Advice:
        data = json.dumps(request).encode()
        req = urllib.request.Request(self.url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        except (urllib.error.URLError, OSError) as e:
            return Advice([], "none", error=f"unreachable: {getattr(e, 'reason', e)}")
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            answer = {}
        source = headers.get("X-Strategy-Source") or ("none" if status >= 400 else "free")
        call_id = headers.get("X-Call-Id")
        if status != 200 or not isinstance(answer, dict):
            code = answer.get("error") if isinstance(answer, dict) else None
            return Advice([], "none", call_id=call_id, answer=answer if isinstance(answer, dict) else {},
                          error=code or f"http_{status}")
        decisions, dropped = [], []
        for d in answer.get("decisions") or []:
            clean, why = _clean(d, self.max_leverage)
            if clean is None:
                dropped.append(why or "invalid")
                continue
            clean["advice_source"] = source
            decisions.append(clean)
        return Advice(decisions, source, tx=headers.get("X-Payment-Tx"), call_id=call_id,
                      answer=answer, dropped=dropped)

    async def adecide(self, request: Mapping[str, Any]) -> Advice:
        """`decide` in a worker thread, so roma-01's event loop keeps running meanwhile."""
        return await asyncio.to_thread(self.decide, request)
