"""Time the contact scrubbers on hostile text of 20k, 40k and 1M characters (``make bench-scrub``).

Each case is a long run of one pattern that a backtracking email pattern or the phone matcher
might spend superlinear or large linear time on; a line per scrubber and size, in ms."""

from __future__ import annotations

import time
from collections.abc import Callable

from graph.ingest.deadletter import make_dead_letter
from graph.privacy import EMAIL_RE, Pseudonymizer, mask_contacts

SIZES = (20_000, 40_000, 1_000_000)


def cases(n: int) -> dict[str, str]:
    return {
        "letters": "a" * n, "dots": "." * n, "at signs": "@" * n, "letter-at": "a@" * (n // 2),
        "letter-dot": "x@" + "a." * (n // 2), "digits": "1" * n,
        "digits and spaces": "1 " * (n // 2), "digits and dashes": "1-" * (n // 2),
        "plus digits": "+1" * (n // 2), "phones": "(808) 782-1557 " * (n // 15),
        "emails": "a@b.co " * (n // 7), "unicode": "ö" * n + "@",
    }


def timed(func: Callable[[str], object], text: str) -> float:
    started = time.perf_counter()
    func(text)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    p = Pseudonymizer("bench")
    scrubbers: dict[str, Callable[[str], object]] = {
        "EMAIL_RE.sub": lambda t: EMAIL_RE.sub("", t),
        "mask_contacts": mask_contacts,
        "scrub_text": p.scrub_text,
        "dead letter": lambda t: make_dead_letter(p, source="bench", reason=t, raw=t),
    }
    print(f"{'case':20s} {'chars':>9s} " + " ".join(f"{name:>14s}" for name in scrubbers))
    worst = 0.0
    for n in SIZES:
        for name, text in cases(n).items():
            times = [timed(func, text) for func in scrubbers.values()]
            worst = max(worst, *times[1:])
            print(f"{name:20s} {len(text):9d} " + " ".join(f"{t:12.1f}ms" for t in times))
    print(f"RESULT worst_scrub_ms={worst:.1f}")


if __name__ == "__main__":
    main()
