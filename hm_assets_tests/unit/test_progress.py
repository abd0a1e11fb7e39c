"""Progress lines: counts, rate and time left, at most every few seconds."""

from __future__ import annotations

from hm_assets.platform.progress import Progress, duration


def test_progress_reports_counts_rate_and_time_left_at_most_every_interval():
    now = [0.0]
    lines: list[str] = []
    progress = Progress("text embeddings", 1000, lines.append, unit="texts", every_seconds=10, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 4.0
        progress.advance(50)
    # 40 s for 500 texts: reports at 12, 24 and 36 s, not after every chunk
    assert len(lines) == 3
    assert lines[-1] == "text embeddings: 450/1,000 texts (45%) in 36 s, 12.5 texts/s, about 44 s left"
    now[0] += 40.0
    progress.advance(500)
    progress.finish()
    assert lines[-1] == "text embeddings: 1,000/1,000 texts (100%) in 1 min 20 s, 12.5 texts/s"


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (4.4, 75, 3725)] == ["4 s", "1 min 15 s", "1 h 02 min"]
