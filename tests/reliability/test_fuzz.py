"""Schemathesis against the app's own OpenAPI, on a real server: every check, ≥ 500 cases.

Two things are configured, both about what a multipart upload can say on the wire:

- a schema-valid upload is any bytes in a `file` part, which are rarely a decodable image, so
  positive data may also get 400 (not an image), 413 (a size limit) or 415 (a refused format);
- `/segment/batch` answers 200 with a status per item, and a multipart part cannot carry the
  non-string values negative generation puts in the `file` array (a JSON `null` arrives as the
  four bytes "null"), so there a 200 counts as a rejection only if every item is a 4xx, which the
  added check `batch_items_reject_invalid_data` asserts.

No check is turned off: every registered check runs on every case, plus max_response_time.
"""

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from tests.support.server import start_server, stop

KEY = "fuzz-key-0123456789"
EXAMPLES = 100  # per operation and mode; operations without inputs are exhausted sooner
POSITIVE_DEFAULT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
NEGATIVE_DEFAULT = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429",
                    "5xx"]
CONFIG = {
    "auth": {"openapi": {"HTTPBearer": {"bearer": KEY}, "APIKeyHeader": {"api_key": KEY}}},
    "checks": {"max_response_time": 30,
               "positive_data_acceptance": {"expected-statuses": [*POSITIVE_DEFAULT, "400",
                                                                  "413", "415"]}},
    "operations": [{"include-path": "/segment/batch",
                    "checks": {"negative_data_rejection": {
                        "expected-statuses": [*NEGATIVE_DEFAULT, "200"]}}}],
}


@schemathesis.check
def batch_items_reject_invalid_data(ctx, response, case) -> bool | None:
    """A 200 from /segment/batch for negative data must report every item as a client error."""
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if case.operation.label == "POST /segment/batch" and negative and response.status_code == 200:
        statuses = [item["status"] for item in response.json()]
        assert all(400 <= s < 500 for s in statuses), f"invalid items accepted: {statuses}"
    return None


def fuzz(operation, mode: GenerationMode, counts: Counter):
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        counts[f"{operation.label} {mode.value}"] += 1
        case.call_and_validate(checks=CHECKS.get_all())

    return run


@pytest.mark.slow
def test_fuzzing_the_api_finds_no_failure_in_at_least_500_cases(tiny_checkpoint, tmp_path):
    load_all_checks()
    proc, base = start_server({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint),
                               "DECONVSEG_THREADS": "1", "DECONVSEG_DEVICE": "cpu",
                               "DECONVSEG_API_KEY": KEY}, log=tmp_path / "server.log")
    counts: Counter = Counter()
    failures, nothing_to_negate = [], []
    try:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json",
                                               config=SchemathesisConfig.from_dict(CONFIG))
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in GenerationMode:
                try:
                    fuzz(operation, mode, counts)()
                except Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:
                        raise
                    nothing_to_negate.append(operation.label)  # no inputs: nothing to make invalid
                except (Exception, BaseExceptionGroup) as exc:  # a FailureGroup is the latter
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
    finally:
        stop(proc)
    print(f"{sum(counts.values())} cases: {dict(counts)}; no negative cases for "
          f"{nothing_to_negate}")
    assert not failures, "\n\n".join(failures)
    assert {"POST /segment", "POST /segment/batch", "GET /model"} <= {k.rsplit(" ", 1)[0]
                                                                      for k in counts}
    assert sum(counts.values()) >= 500
