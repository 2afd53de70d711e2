"""DSI parameters and the names every module shares: experts, families, event types, fixed-point scales.

Experts emit a vote ``p`` in [0, 1] = P(close_{t+h} > close_t), 0.5 = neutral, quantised to 2^-16
(``VOTE_SCALE``); the rows of every (experts x rows) matrix follow ``EXPERTS``: fsm 0-3, classifier 4-6,
anomaly 7-10, divergence 11-14.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

ENCODING_VERSION = 1
STATE_VERSION = 2  # 2: the survival flags of the last bars (SymState.surv)
MINUTE_NS = 60_000_000_000
FSM_EXPERTS = ("compression_expansion", "run_volume", "absorption", "exhaustion")
CLF_EXPERTS = ("ret_bigram", "ret_trigram", "shape")
CLF_SIZES = (25, 125, 45)  # contexts per classifier
ANOMALY_EXPERTS = ("return", "range", "volume", "multivariate")
ANOMALY_DIRECTION = (-1.0, -1.0, 1.0, -1.0)
DIV_EXPERTS = ("price_volume", "price_vwap", "tf_15m", "tf_1h")
FAMILIES = {
    "fsm": FSM_EXPERTS,
    "classifier": CLF_EXPERTS,
    "anomaly": ANOMALY_EXPERTS,
    "divergence": DIV_EXPERTS,
}
EXPERTS = tuple(f"{fam}__{name}" for fam, names in FAMILIES.items() for name in names)
N_EXPERTS = len(EXPERTS)
# rows of each family in an (experts x rows) matrix
FSM_ROWS = slice(0, 4)
CLF_ROWS = slice(4, 7)
ANOMALY_ROWS = slice(7, 11)
DIV_ROWS = slice(11, 15)
EVENT_TYPES = ("volume_spike", "price_jump", "range_expansion", "divergence", "pattern")
SUM_SCALE = 2.0**32  # fixed point of the rolling sums
VOTE_SCALE = 65536.0  # vote grid
NO_EVENT = np.iinfo(np.int64).min  # last event time of a type that never fired
EXACT_INT_F = 2.0**52  # bits of 2^52 + x (0 <= x < 2^52 integer) are EXACT_INT_BITS + x
EXACT_INT_BITS = np.float64(EXACT_INT_F).view(np.int64)
CLF_OFFSETS = np.concatenate([[0], np.cumsum(CLF_SIZES)])  # first count column of each classifier


@dataclass(frozen=True)
class DsiConfig:
    window: int = 32  # MicroTape W
    horizon: int = 5  # h, bars
    vol_window: int = 30  # V
    vwap_window: int = 32  # D
    eta: float = 0.05
    weight_floor: float = 0.01
    retire_span: int = 390
    min_alive: int = 3
    evidence_threshold: float = 0.6
    confirm_threshold: float = 0.6
    event_threshold: float = 0.92  # volume_spike, price_jump, range_expansion
    divergence_threshold: float = 0.7
    pattern_threshold: float = 0.5
    cooling_minutes: int = 15
    ci_level: float = 0.90
    # mx_expert_survival_rates: per expert, the share of the symbol's last ``survival_window`` bars (the bar
    # itself included; fewer at the start of its history) at which its weight w_i was >= weight_floor
    survival_window: int = 60

    def __post_init__(self) -> None:
        counts = (self.window, self.horizon, self.vwap_window, self.retire_span, self.survival_window)
        smallest = min(*counts, self.min_alive)
        if smallest < 1 or self.vol_window < 3 or self.min_alive > N_EXPERTS:
            raise ValueError(
                "window, horizon, vwap_window, retire_span, survival_window, min_alive (<= experts) must be "
                ">= 1 and vol_window >= 3"
            )
        if not 0 < self.weight_floor < 1 / N_EXPERTS or not 0 < self.ci_level < 1 or self.eta <= 0:
            raise ValueError("need 0 < weight_floor < 1/experts, 0 < ci_level < 1, eta > 0")
        if (
            self.cooling_minutes < 1
        ):  # the greedy de-dup steps to the first event at least one cooling span later
            raise ValueError("cooling_minutes must be >= 1")

    @property
    def tail_rows(self) -> int:
        lookback = max(self.vol_window + 8, self.vwap_window, 120, self.window + self.vol_window + 1)
        return lookback + self.horizon + 2

    def fingerprint(self) -> str:
        text = json.dumps({**asdict(self), "v": ENCODING_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
