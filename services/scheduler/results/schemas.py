"""Results API shapes: a campaign's conversion goal and experiment (fields of the campaign), and its stats."""

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from kernel.contracts import PropertyCondition
from services.scheduler.results.domain import Metric

MAX_GOAL_CONDITIONS = 50
MAX_WINDOW_HOURS = 90 * 24
MAX_EXPERIMENT_HOURS = 90 * 24


class ConversionGoal(BaseModel):
    """A campaign's conversion: the user performs `event` (satisfying `where`) within `within_hours` after a send
    reached them, or after they were held out (control groups)."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(min_length=1, max_length=512, description="the goal event, e.g. Order Completed")
    where: list[PropertyCondition] = Field(
        default_factory=list, max_length=MAX_GOAL_CONDITIONS, description="conditions on its properties (docs/segments.md)"
    )
    within_hours: int = Field(ge=1, le=MAX_WINDOW_HOURS, description="the conversion window after the send, in hours")


class ExperimentIn(BaseModel):
    """Pick the winning variant automatically: `auto_winner_after_hours` after launch, the variant best on `metric`,
    if significantly better than every other; from then on every send uses it."""

    model_config = ConfigDict(extra="forbid")

    auto_winner_after_hours: int = Field(ge=1, le=MAX_EXPERIMENT_HOURS)
    metric: Metric = "converted"


class Counts(BaseModel):
    """What happened to a campaign's sends: decisions (entered, suppressed by rule), outcomes and conversions."""

    entered: int = Field(0, description="send decisions made (every entry of a user)")
    suppressed: int = Field(0, description="sends a delivery rule stopped")
    suppressed_by_rule: dict[str, int] = Field(default_factory=dict, description="rule -> sends it stopped")
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    bounced: int = 0
    opened: int = 0
    clicked: int = 0
    dismissed: int = 0
    unsubscribed: int = 0
    converted: int = Field(0, description="distinct users who converted")


class DayCounts(Counts):
    day: date = Field(description="the UTC day")


class Rate(BaseModel):
    """A proportion with its 95 % Wilson score interval."""

    rate: float
    low: float
    high: float


class Uplift(BaseModel):
    """A variant's conversion rate against the control's: the difference, and its two-proportion z-test."""

    against: str = Field(description="the held-out arm compared with: control, else global_control")
    absolute: float = Field(description="rate − control rate")
    relative: float | None = Field(description="(rate − control rate) / control rate; null when the control rate is 0")
    z: float | None
    p_value: float | None = Field(description="two-sided; null without variance")
    significant: bool = Field(description="p < 0.05")


class VariantStats(BaseModel):
    variant: str = Field(description="a variant's name, control, global_control, or default (no variant)")
    recipients: int = Field(description="distinct users sent to (held out, for control arms): the rates' denominator")
    totals: Counts
    conversion_rate: Rate | None
    uplift: Uplift | None
    daily: list[DayCounts]


class ExperimentOut(BaseModel):
    metric: Metric
    decides_at: datetime
    status: str = Field(description="pending, or decided (with or without a winner)")
    winner: str | None
    p_value: float | None
    reason: str | None
    decided_at: datetime | None


class CampaignResults(BaseModel):
    """`GET /campaigns/{id}/stats`: the send decisions by status (as always), then totals, per-variant results and
    daily series, conversion rates with 95 % intervals, uplift against control, and the experiment's state."""

    campaign_id: str
    triggered: int
    by_status: dict[str, int]
    conversion: ConversionGoal | None
    totals: Counts
    variants: list[VariantStats]
    experiment: ExperimentOut | None
