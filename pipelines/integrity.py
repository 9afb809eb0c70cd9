"""The store's own consistency checks (`summarize check`).

DuckDB guards its file format itself; these checks guard what longsum means
by its rows: every finished run has exactly one final summary, chunks tile
the document without gaps, every replayed call has an original, nothing
points at a run that does not exist, and no run claims to be running after
its process died.
"""

from __future__ import annotations

import socket

from pipelines.store import Store

CHECKS: dict[str, str] = {
    "duplicate run ids": "SELECT run_id FROM runs GROUP BY 1 HAVING count(*) > 1",
    "duplicate summary ids": "SELECT summary_id FROM summaries GROUP BY 1 HAVING count(*) > 1",
    "duplicate call ids": "SELECT call_id FROM llm_calls GROUP BY 1 HAVING count(*) > 1",
    "finished runs without exactly one final summary": (
        "SELECT r.run_id FROM runs r LEFT JOIN summaries s ON s.run_id = r.run_id AND s.is_final "
        "WHERE r.status IN ('ok', 'degraded') GROUP BY r.run_id HAVING count(s.summary_id) <> 1"
    ),
    "final summary differs from the run's": (
        "SELECT r.run_id FROM runs r JOIN summaries s ON s.run_id = r.run_id AND s.is_final "
        "WHERE r.final_summary IS DISTINCT FROM s.text"
    ),
    "summaries of unknown runs": "SELECT DISTINCT run_id FROM summaries WHERE run_id NOT IN (SELECT run_id FROM runs)",
    "chunks of unknown runs": "SELECT DISTINCT run_id FROM chunks WHERE run_id NOT IN (SELECT run_id FROM runs)",
    "calls of unknown runs": (
        "SELECT DISTINCT run_id FROM llm_calls WHERE run_id IS NOT NULL AND run_id NOT IN (SELECT run_id FROM runs)"
    ),
    "runs of unknown documents": "SELECT run_id FROM runs WHERE doc_id NOT IN (SELECT doc_id FROM documents)",
    "chunks that do not tile their document": (
        "SELECT run_id FROM (SELECT c.run_id, c.start_char, c.end_char, d.n_chars, "
        "lag(c.end_char) OVER (PARTITION BY c.run_id ORDER BY c.idx) AS previous_end, "
        "row_number() OVER (PARTITION BY c.run_id ORDER BY c.idx) AS nth, "
        "count(*) OVER (PARTITION BY c.run_id) AS n, r.params->>'chunker' AS chunker "
        "FROM chunks c JOIN runs r USING (run_id) JOIN documents d USING (doc_id)) "
        "WHERE chunker IS DISTINCT FROM 'fixed' AND ((nth = 1 AND start_char <> 0) "
        "OR (nth > 1 AND start_char <> previous_end) OR (nth = n AND end_char <> n_chars)) GROUP BY run_id"
    ),
    "successful calls without a response": (
        "SELECT call_id FROM llm_calls WHERE status = 'ok' AND NOT cached AND response IS NULL"
    ),
    "interrupted runs not redone since (summarize corpus or the same command resumes them)": (
        "SELECT i.run_id FROM runs i WHERE i.status = 'interrupted' AND NOT EXISTS (SELECT 1 FROM runs r "
        "WHERE r.doc_id = i.doc_id AND r.method = i.method AND r.model IS NOT DISTINCT FROM i.model "
        "AND r.status IN ('ok', 'degraded') AND r.started_at > i.started_at)"
    ),
    "replayed calls without an original": (
        "SELECT call_id FROM llm_calls c WHERE cached AND NOT EXISTS (SELECT 1 FROM llm_calls o "
        "WHERE o.request_hash = c.request_hash AND NOT o.cached AND o.status = 'ok')"
    ),
}


def verify(store: Store) -> list[str]:
    """Problems found, one line each (empty when the store is consistent)."""
    from pipelines.runner import alive

    problems = []
    with store.connect() as con:
        for name, sql in CHECKS.items():
            rows = con.execute(sql).fetchall()
            if rows:
                sample = ", ".join(str(r[0])[:12] for r in rows[:3])
                problems.append(f"{name}: {len(rows)} ({sample}{', ...' if len(rows) > 3 else ''})")
        running = con.execute("SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ?",
                              [socket.gethostname()]).fetchall()
    dead = [run_id for run_id, pid in running if not alive(pid)]
    if dead:
        problems.append(f"runs marked running whose process is gone: {len(dead)} ({', '.join(r[:12] for r in dead[:3])})")
    return problems
