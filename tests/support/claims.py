"""Workers racing to claim: each ledger connection calls claim_next at the same moment, from
its own thread, as several worker processes would."""

from __future__ import annotations

import threading
from typing import Any

from server.forget.ledger import ForgetLedger


def race_to_claim(workers: dict[str, ForgetLedger]) -> tuple[str, str, dict[str, Any]]:
    """(winner, a loser, every worker's claim_next result); asserts exactly one claim won."""
    start, claims = threading.Barrier(len(workers)), {}

    def race(name: str) -> None:
        start.wait()
        claims[name] = workers[name].claim_next(name)

    threads = [threading.Thread(target=race, args=(n,)) for n in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, claim in claims.items() if claim is not None]
    assert len(winners) == 1, winners
    return winners[0], next(n for n in workers if n != winners[0]), claims
