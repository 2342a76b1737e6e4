"""The study's SQLite store: raters, each rater's plan (what they see, in which order) and their rankings.

A rater's plan is drawn once, when the rater starts, and stored: the two tasks of Sec. 5.3 in a random order,
within each task every item in a random order, and for each (item, task) the methods' images in a random order
(`shown`, recorded with the response). Resuming is then "the first planned position without a response".

One response per rater x item x task: a second submission is refused (`Duplicate`, HTTP 409) and the first stays:
a ranking is made once, before later items are seen, as in the paper's protocol. A response is acknowledged only
after its transaction is committed with `synchronous=FULL` in WAL mode, i.e. on disk.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdgan.service.study.study import Study

SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL, simulated INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS plan (
    rater TEXT NOT NULL REFERENCES raters(id), position INTEGER NOT NULL, task TEXT NOT NULL, item TEXT NOT NULL,
    shown TEXT NOT NULL, PRIMARY KEY (rater, position), UNIQUE (rater, item, task));
CREATE TABLE IF NOT EXISTS responses (
    rater TEXT NOT NULL REFERENCES raters(id), item TEXT NOT NULL, task TEXT NOT NULL, ranking TEXT NOT NULL,
    shown TEXT NOT NULL, position INTEGER NOT NULL, submitted REAL NOT NULL, PRIMARY KEY (rater, item, task));
"""


class Duplicate(Exception):
    """This rater has ranked this item for this task already."""


@dataclass(frozen=True)
class Planned:
    """One step of a rater's plan: show `item` for `task`, the methods' images in the order `shown`."""

    position: int
    task: str
    item: str
    shown: tuple[str, ...]  # method names, in display order


def draw_plan(study: Study, rng: np.random.Generator) -> list[Planned]:
    """Tasks in a random order; within each, the items shuffled; per item and task the methods shuffled."""
    plan: list[Planned] = []
    for task in rng.permutation(list(study.tasks)).tolist():
        for i in rng.permutation(len(study.items)).tolist():
            shown = tuple(rng.permutation(list(study.methods)).tolist())
            plan.append(Planned(len(plan), task, study.items[i].id, shown))
    return plan


class Store:
    """The responses database of one study (STUDY/responses.sqlite by default); safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit returns once the WAL is synced: acknowledged = on disk
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements: Sequence[tuple[str, tuple]]) -> None:
        """Run the statements in one transaction (all or none)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def add_rater(self, study: Study, name: str = "", *, rng: np.random.Generator | None = None,
                  simulated: bool = False) -> str:
        """A new rater with a freshly drawn plan; returns their id (the cookie's value)."""
        rater = secrets.token_urlsafe(18)
        plan = draw_plan(study, rng if rng is not None else np.random.default_rng())
        self._write([("INSERT INTO raters VALUES (?, ?, ?, ?)", (rater, name, time.time(), int(simulated)))]
                    + [("INSERT INTO plan VALUES (?, ?, ?, ?, ?)", (rater, p.position, p.task, p.item, json.dumps(p.shown)))
                       for p in plan])
        return rater

    def rater(self, rater: str) -> dict | None:
        """{id, name, simulated} of a known rater, else None."""
        rows = self._read("SELECT id, name, simulated FROM raters WHERE id = ?", (rater,))
        return {"id": rows[0][0], "name": rows[0][1], "simulated": bool(rows[0][2])} if rows else None

    def next_step(self, rater: str) -> Planned | None:
        """The first planned step this rater has not answered, or None when they are done."""
        rows = self._read("SELECT p.position, p.task, p.item, p.shown FROM plan p LEFT JOIN responses r "
                          "ON r.rater = p.rater AND r.item = p.item AND r.task = p.task "
                          "WHERE p.rater = ? AND r.rater IS NULL ORDER BY p.position LIMIT 1", (rater,))
        return Planned(rows[0][0], rows[0][1], rows[0][2], tuple(json.loads(rows[0][3]))) if rows else None

    def planned(self, rater: str, item: str, task: str) -> Planned | None:
        """The rater's plan step for (item, task), if planned."""
        rows = self._read("SELECT position, task, item, shown FROM plan WHERE rater = ? AND item = ? AND task = ?",
                          (rater, item, task))
        return Planned(rows[0][0], rows[0][1], rows[0][2], tuple(json.loads(rows[0][3]))) if rows else None

    def progress(self, rater: str) -> tuple[int, int]:
        """(steps answered, steps planned) of a rater."""
        done = self._read("SELECT COUNT(*) FROM responses WHERE rater = ?", (rater,))[0][0]
        total = self._read("SELECT COUNT(*) FROM plan WHERE rater = ?", (rater,))[0][0]
        return int(done), int(total)

    def submit(self, rater: str, step: Planned, ranking: Sequence[str]) -> None:
        """Store one ranking (method names, best first), committed to disk before returning; Duplicate if this
        rater has answered (item, task) already (nothing is changed)."""
        try:
            self._write([("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (rater, step.item, step.task, json.dumps(list(ranking)), json.dumps(list(step.shown)),
                           step.position, time.time()))])
        except sqlite3.IntegrityError as e:
            raise Duplicate(f"this rater has ranked item {step.item} for {step.task} already") from e

    def responses(self) -> list[dict]:
        """Every response with its rater's name and whether the rater was simulated, in submission order."""
        rows = self._read("SELECT r.rater, a.name, a.simulated, r.task, r.item, r.ranking, r.shown, r.position, "
                          "r.submitted FROM responses r JOIN raters a ON a.id = r.rater ORDER BY r.submitted, r.rowid")
        return [{"rater": r[0], "name": r[1], "simulated": bool(r[2]), "task": r[3], "item": r[4],
                 "ranking": json.loads(r[5]), "shown": json.loads(r[6]), "position": r[7], "submitted": r[8]}
                for r in rows]

    def counts(self) -> dict[str, int]:
        """How many raters, responses and plan steps the store holds."""
        return {"raters": self._read("SELECT COUNT(*) FROM raters")[0][0],
                "responses": self._read("SELECT COUNT(*) FROM responses")[0][0],
                "planned": self._read("SELECT COUNT(*) FROM plan")[0][0]}
