"""What a summary row is about: a *run key* (method, target, draft, settings, dtype) names one
decoding configuration. Records carry it; an lmms-eval run of an lvspec backend gets it from its
model_args (`lvspec_eval.report.lmms_files`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from lvspec_eval.config import METHODS, lossless_counterpart


@dataclass(frozen=True)
class RunKey:
    """One decoding configuration: what a summary row (with task and split) is about."""

    method: str
    target: str
    draft: Optional[str]  # None for `ar`
    settings: str  # the method's params (LVSpecArgs.rule_params) as canonical JSON
    dtype: str

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.settings)

    def ar(self) -> "RunKey":
        """The key of the `ar` baseline this configuration is compared with."""
        return RunKey("ar", self.target, None, "{}", self.dtype)

    def lossless(self) -> Optional["RunKey"]:
        """The key of the lossless run with the same drafter input that this loose configuration's tau
        is compared with (`config.lossless_counterpart`); None for `ar`, `sd`, `specvlm`."""
        found = lossless_counterpart(self.method, self.params, self.draft)
        if found is None:
            return None
        method, params = found
        return RunKey(method, self.target, self.draft, canonical(params), self.dtype)

    def sort_key(self) -> tuple:
        order = METHODS.index(self.method) if self.method in METHODS else len(METHODS)
        return (self.target, self.dtype, order, self.method, self.draft or "", self.settings)


def canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def record_key(record: dict[str, Any]) -> RunKey:
    return RunKey(record["method"], record["target"], record["draft"], canonical(record["params"]), record["dtype"])
