"""pydantic models of what reads a paid answer, written from the field lists of roma-01's
`backend/src/roma_trading/api/schemas/x402.py` (its `StrategyResponse`, snake_case, extra keys
ignored) and of the seed's camelCase example, plus roma-01's decision format (the objects its
trading agent's executor runs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator


class _Roma(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --- roma-01's StrategyResponse (every part required) ---------------------------------------

class StrategyRecommendation(_Roma):
    summary: str
    steps: list[str]
    risk_notes: list[str] = []
    confidence: Optional[float] = None
    rationale: Optional[str] = None


class PaymentReceipt(_Roma):
    amount: str
    asset: str
    network: str
    pay_to: str
    deadline_seconds: int
    payer: Optional[str]
    receipt_header: Optional[str] = None


class StrategyMetadata(_Roma):
    request_id: str
    model: Optional[str]
    generated_at: datetime
    telemetry: dict[str, Any] = {}


class StrategyResponse(_Roma):
    strategy: StrategyRecommendation
    disclaimer: str
    payment: PaymentReceipt
    metadata: StrategyMetadata


# --- the seed's camelCase example -----------------------------------------------------------

class SeedStrategy(BaseModel):
    summary: str
    steps: list[str]
    riskNotes: list[str]


class SeedPayment(BaseModel):
    receiptId: str
    amount: str
    asset: str
    network: str


class SeedMetadata(BaseModel):
    requestId: str
    model: str
    generatedAt: datetime


class SeedResponse(BaseModel):
    strategy: SeedStrategy
    payment: SeedPayment
    metadata: SeedMetadata


# --- roma-01's decision format --------------------------------------------------------------

OPEN = ("open_long", "open_short")
CLOSE = ("close_long", "close_short")


class Decision(BaseModel):
    """Exactly the keys roma-01's decision format defines: nothing else."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["open_long", "open_short", "close_long", "close_short", "hold", "wait"]
    symbol: str = Field(pattern=r"^[A-Z0-9]+USDT$")
    confidence: float = Field(ge=0.0, le=1.0)
    reasoning: str
    leverage: Optional[StrictInt] = Field(None, ge=1)
    position_size_usd: Optional[float] = Field(None, gt=0)
    stop_loss: Optional[float] = Field(None, gt=0)
    take_profit: Optional[float] = Field(None, gt=0)
    close_quantity: Optional[float] = Field(None, gt=0)
    close_quantity_pct: Optional[float] = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _fields_by_action(self) -> "Decision":
        opens = (self.leverage, self.position_size_usd, self.stop_loss, self.take_profit)
        if self.action in OPEN:
            if any(x is None for x in opens):
                raise ValueError(f"{self.action} needs leverage, position_size_usd, stop_loss, take_profit")
            long = self.action == "open_long"
            if long and not self.stop_loss < self.take_profit:
                raise ValueError("a long's stop-loss is below its take-profit")
            if not long and not self.stop_loss > self.take_profit:
                raise ValueError("a short's stop-loss is above its take-profit")
        elif any(x is not None for x in opens):
            raise ValueError(f"{self.action} carries open-only fields")
        if self.action not in CLOSE and (self.close_quantity or self.close_quantity_pct):
            raise ValueError(f"{self.action} carries a close quantity")
        return self
