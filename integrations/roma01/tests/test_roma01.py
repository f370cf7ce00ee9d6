"""The drop-in and the answers it gets, checked the way roma-01 reads them.

The unit tests run anywhere. The end-to-end tests need a real buyer + seller pair on the
devnet; tests/roma01.rs starts one and runs this file with the URLs in the environment:
X402_ROMA01_OUTBOUND (a buyer paying a seller in front of the built-in advisor),
X402_ROMA01_FALLBACK_OUTBOUND (a buyer whose seller is down, with the advisor as its local
fallback), X402_ROMA01_DIRECT_ANSWER (a file with an answer the Rust test paid for directly at
the seller, as roma-01's own x402 client would) and X402_ROMA01_REPORT (where the paid
transactions are written for the money check). With X402_ROMA01_REQUIRE=1 a missing one fails
instead of skipping."""

from __future__ import annotations

import json
import os
from decimal import Decimal

import pytest

from executor import Executor
from roma01_models import Decision, SeedResponse, StrategyResponse
from x402_strategy import StrategyClient, build_strategy_request

# --- roma-01 toolkit dicts, as its DEX toolkits return them ---------------------------------

HL_ACCOUNT = {"total_wallet_balance": 10000.0, "available_balance": 8200.0, "total_unrealized_profit": 100.0}
HL_POSITIONS = [
    {"symbol": "BTCUSDT", "side": "long", "position_amt": 0.1, "entry_price": 59000.0, "mark_price": 60000.0,
     "unrealized_profit": 100.0, "leverage": 3, "liquidation_price": 41000.0},
    # Hyperliquid omitted entryPx: roma-01's toolkit reports 0.0.
    {"symbol": "ETHUSDT", "side": "short", "position_amt": 0.5, "entry_price": 0.0, "mark_price": 3000.0,
     "unrealized_profit": 0.0, "leverage": 3, "liquidation_price": 0.0},
]
HL_STRATEGY = {"risk_profile": "high", "objectives": "Keep the book delta-neutral", "scan_interval_minutes": 3,
               "default_coins": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
               "risk_management": {"max_positions": 3, "max_leverage": 3, "stop_loss_pct": 3.0, "take_profit_pct": 6.0}}

ASTER_ACCOUNT = {"total_wallet_balance": 4171.21831042, "available_balance": 3102.8711221,
                 "total_unrealized_profit": -39.334}
ASTER_POSITIONS = [
    {"symbol": "BTCUSDT", "side": "long", "position_amt": 0.5, "entry_price": 61850.3, "mark_price": 61420.1,
     "unrealized_profit": -215.1, "leverage": 20, "liquidation_price": 0.0},
    {"symbol": "ETHUSDT", "side": "short", "position_amt": 3.5, "entry_price": 3168.42, "mark_price": 3177.2,
     "unrealized_profit": -30.73, "leverage": 10, "liquidation_price": 4254.61482015},
    # No price at all (both 0.0): kept as it is.
    {"symbol": "SOLUSDT", "side": "long", "position_amt": 10.0, "entry_price": 0.0, "mark_price": 0.0,
     "unrealized_profit": 0.0, "leverage": 5, "liquidation_price": 0.0},
]
ASTER_STRATEGY = {"scan_interval_minutes": 3, "default_coins": ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"],
                  "risk_management": {"max_positions": 3, "max_leverage": 5, "stop_loss_pct": 2.0,
                                      "take_profit_pct": 5.0}}

CASES = {
    "hyperliquid": ("hyperliquid", HL_ACCOUNT, HL_POSITIONS, HL_STRATEGY, "0x8ba1f109551bD432803012645Ac136ddd64DBA72"),
    "aster": ("aster", ASTER_ACCOUNT, ASTER_POSITIONS, ASTER_STRATEGY, "0x1027E4128c453fa17ea7e2bc1e303892dA94CD45"),
}


def _env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        if os.environ.get("X402_ROMA01_REQUIRE") == "1":
            pytest.fail(f"{name} is not set")
        pytest.skip(f"{name} not set: run through tests/roma01.rs")
    return v


def _request(case: str) -> dict:
    platform, account, positions, strategy, owner = CASES[case]
    return build_strategy_request(platform, account, positions, strategy=strategy, owner=owner,
                                  agent_id=f"{platform}-agent", cycle=7)


def check_answer(answer: dict, telemetry: dict | None = None) -> None:
    """Both readers accept the answer, the twins agree, and the decisions are roma-01's."""
    roma = StrategyResponse.model_validate(answer)
    seed = SeedResponse.model_validate(answer)
    assert roma.strategy.risk_notes == seed.strategy.riskNotes and roma.strategy.risk_notes
    assert roma.metadata.request_id == seed.metadata.requestId
    assert roma.payment.amount == seed.payment.amount
    p = answer["payment"]
    assert Decimal(p["amount"]) == Decimal(p["amountAtomic"]) / 10 ** p["decimals"], p
    assert roma.payment.pay_to == p["payTo"] and roma.payment.payer
    if telemetry:
        assert roma.metadata.telemetry == telemetry
    assert answer["decisions"], answer
    for d in answer["decisions"]:
        Decision.model_validate(d)


# --- unit tests: no sidecar needed ----------------------------------------------------------

def test_the_request_has_roma01s_buyer_shape():
    req = _request("aster")
    a = req["account"]
    assert a["platform"] == "aster" and a["balance"] == {"asset": "USDT", "amount": 3102.8711221}
    assert a["equity"] == 4171.21831042 and a["raw"] == {"account": ASTER_ACCOUNT}
    btc = a["positions"][0]
    assert (btc["size"], btc["side"], btc["entryPrice"], btc["markPrice"]) == (0.5, "long", 61850.3, 61420.1)
    assert btc["metadata"] == {"liquidation_price": 0.0} and btc["unrealized_pnl"] == -215.1
    assert req["preferences"]["leverage"] == 5 and req["preferences"]["time_horizon"] == "3m"
    assert req["constraints"] == ["Max positions 3 / Max leverage 5x", "Stop loss 2.0% / Take profit 5.0%"]
    assert req["telemetry"] == {"agentId": "aster-agent", "cycle": 7, "platform": "aster"}
    # The same keys as roma-01's own buyer sends (tests/fixtures/roma01_buyer_request.json).
    fixture = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "fixtures",
                           "roma01_buyer_request.json")
    with open(fixture) as f:
        theirs = json.load(f)
    assert set(req) == set(theirs) and set(a) == set(theirs["account"])
    assert set(btc) == set(theirs["account"]["positions"][0])


def test_closed_rows_are_left_out_and_the_owner_is_optional():
    req = build_strategy_request("hyperliquid", HL_ACCOUNT, HL_POSITIONS + [
        {"symbol": "SOLUSDT", "side": "long", "position_amt": 0.0}])
    assert [p["symbol"] for p in req["account"]["positions"]] == ["BTCUSDT", "ETHUSDT"]
    assert "owner" not in req["account"] and req["account"]["balance"]["asset"] == "USDC"


def test_the_client_reads_roma01s_environment():
    c = StrategyClient.from_env({"REMOTE_TIMEOUT_SECONDS": "20", "X402_OUTBOUND_URL": "http://sidecar:8403/x402"})
    assert (c.url, c.timeout) == ("http://sidecar:8403/x402", 25.0)
    assert StrategyClient.from_env({}).url == "http://127.0.0.1:8403/x402"


def test_an_unreachable_sidecar_is_no_advice_not_an_exception():
    advice = StrategyClient("http://127.0.0.1:9/x402", timeout=2).decide(_request("aster"))
    assert (advice.source, advice.decisions, advice.paid) == ("none", [], False)
    assert advice.error.startswith("unreachable")


# --- end to end: a real buyer + seller pair on the devnet -----------------------------------

@pytest.mark.parametrize("case", ["hyperliquid", "aster"])
def test_paid_advice_validates_and_executes(case):
    url = _env("X402_ROMA01_OUTBOUND")
    platform, account, positions, strategy, _ = CASES[case]
    req = _request(case)
    client = StrategyClient(url, max_leverage=strategy["risk_management"]["max_leverage"])
    advice = client.decide(req)
    assert advice.source == "paid" and advice.paid and advice.tx, advice
    assert not advice.dropped, advice.dropped
    check_answer(advice.answer, telemetry=req["telemetry"])
    with open(_env("X402_ROMA01_REPORT"), "a") as f:
        f.write(advice.tx + "\n")
    assert all(d["advice_source"] == "paid" for d in advice.decisions)
    decisions = [{k: v for k, v in d.items() if k != "advice_source"} for d in advice.decisions]
    assert decisions == advice.answer["decisions"]
    log = Executor(account, positions, strategy["risk_management"]["max_leverage"]).run(decisions)
    actions = {d["symbol"]: d["action"] for d in decisions}
    if case == "hyperliquid":
        # A delta-neutral hedge: the short is added to, at the 3x cap, with margin = notional ÷ 3.
        eth = next(d for d in decisions if d["symbol"] == "ETHUSDT")
        assert eth["action"] == "open_short" and eth["leverage"] == 3, eth
        assert eth["stop_loss"] > 3000 > eth["take_profit"]
        assert actions["BTCUSDT"] == "hold" and actions["SOLUSDT"] == "wait"
        assert "open_short ETHUSDT 1.500000 at 3x" in log, log
    else:
        # Ten times levered against a 5x cap: both priced positions are partly closed.
        assert actions["BTCUSDT"] == "close_long" and actions["ETHUSDT"] == "close_short", decisions
        assert all(d.get("close_quantity") for d in decisions if d["action"].startswith("close_"))
        assert actions["SOLUSDT"] == "hold" and actions["BNBUSDT"] == "wait"


def test_an_answer_paid_at_the_seller_directly_is_what_roma01_validates():
    with open(_env("X402_ROMA01_DIRECT_ANSWER")) as f:
        answer = json.load(f)
    check_answer(answer)
    # roma-01's x402 client speaks v1: the network is named the v1 way.
    assert answer["payment"]["network"] == "base-sepolia"


def test_fallback_advice_is_marked_and_nothing_is_paid():
    url = _env("X402_ROMA01_FALLBACK_OUTBOUND")
    advice = StrategyClient(url).decide(_request("aster"))
    assert (advice.source, advice.paid, advice.tx) == ("fallback", False, None), advice
    assert advice.decisions and all(d["advice_source"] == "fallback" for d in advice.decisions)
    for d in advice.answer["decisions"]:
        Decision.model_validate(d)
    Executor(ASTER_ACCOUNT, ASTER_POSITIONS, 5).run(
        [{k: v for k, v in d.items() if k != "advice_source"} for d in advice.decisions])
