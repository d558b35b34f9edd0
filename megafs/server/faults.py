"""Fault injection for the local MEGA server: rule parsing, validation and the firing decision.

A rule is a JSON object (from ``--fault JSON`` or ``POST /_megafs/faults``)::

    {"where": "cs" | "upload" | "download" | "sc",
     "command": NAME,            # optional filter (see below)
     <one action>,               # error | http | drop | expire | hashcash | tamper | truncate
     "delay": SECONDS,           # optional; alone it is the action, with another action it
                                 # waits first and then acts
     "count": N | "rate": P, "seed": INT}   # optional mode; absent = every matching request

Actions allowed per ``where``:

=========  ==========================================================================
cs         ``error`` (``level`` "batch" (default): bare int body; "command": only the
           result of ``command`` is replaced), ``http``, ``drop``, ``hashcash``
upload     ``error`` (body), ``http``, ``drop`` (close mid-body), ``expire`` (-8 forever)
download   ``error`` (body), ``http``, ``drop`` (close mid-body), ``tamper``, ``truncate``,
           ``framing`` ("chunked": no Content-Length, chunked encoding; "close": no
           Content-Length, the end of the body is the end of the connection)
sc         ``error`` (bare int body), ``http``, ``drop``
=========  ==========================================================================

``command`` filters: on cs, the batch must contain that command (``hashcash`` defaults to the
login commands ``us`` and ``up``); on sc, ``"sc"`` matches only the poll, ``"wait"`` only the
wait URL, absent matches both.  ``count`` fires on the next N matching requests; ``rate`` fires
on a fraction P of them, decided by SHA-256(seed, n) for the n-th match, so a given seed and
request sequence always fail the same requests.  Rules are tried in order; delay-only rules
add up, and the first rule with a failing action that fires decides.

This module decides only; the HTTP layer carries the decision out.  It never uses the
``random`` module (determinism comes from the seed, unpredictability is not needed).  The web
layer carries decisions out in one place (``web/fault_apply.py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

log = logging.getLogger(__name__)

WHERE = ("cs", "upload", "download", "sc")
ACTIONS = ("error", "http", "drop", "expire", "hashcash", "tamper", "truncate", "framing")
ALLOWED = {
    "cs": {"error", "http", "drop", "hashcash"},
    "upload": {"error", "http", "drop", "expire"},
    "download": {"error", "http", "drop", "tamper", "truncate", "framing"},
    "sc": {"error", "http", "drop"},
}
KEYS = {"where", "command", "level", "delay", "count", "rate", "seed"} | set(ACTIONS)
LOGIN_COMMANDS = ("us", "up")
FRAMINGS = ("chunked", "close")
MAX_DELAY = 600.0
HTTP_STATUS_MIN, HTTP_STATUS_MAX = 400, 599


class FaultRuleError(ValueError):
    """A fault rule that does not follow the documented format."""


@dataclass
class Rule:
    index: int
    where: str
    action: str | None           # None: a delay-only rule
    value: Any                   # error code, HTTP status, easiness, framing, or True
    command: str | None = None
    level: str = "batch"
    delay: float = 0.0
    count: int | None = None     # remaining firings in count mode
    rate: float | None = None
    seed: int = 0
    matched: int = 0
    fired: int = 0
    source: dict = field(default_factory=dict)

    def matches(self, where: str, commands: Iterable[str], sub: str | None) -> bool:
        if self.where != where:
            return False
        if where == "cs":
            names = set(commands)
            if self.command is not None:
                return self.command in names
            if self.action == "hashcash":
                return bool(names & set(LOGIN_COMMANDS))
            return True
        if where == "sc" and self.command is not None:
            return self.command == sub
        return True

    def decide(self) -> bool:
        """Count one matching request and say whether the rule fires on it."""
        self.matched += 1
        if self.count is not None:
            if self.count <= 0:
                return False
            self.count -= 1
        elif self.rate is not None:
            digest = hashlib.sha256(b"%d:%d" % (self.seed, self.matched)).digest()
            if int.from_bytes(digest[:8], "big") / 2.0 ** 64 >= self.rate:
                return False
        self.fired += 1
        return True

    def describe(self) -> dict:
        out = dict(self.source)
        out.update({"matched": self.matched, "fired": self.fired})
        if self.count is not None:
            out["remaining"] = self.count
        return out


@dataclass(frozen=True)
class Decision:
    action: str | None     # None: only a delay
    value: Any = None
    delay: float = 0.0
    rule: int = -1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_rule(obj: Any, index: int = 0) -> Rule:
    """Validate one rule object; raise FaultRuleError with the reason."""
    if not isinstance(obj, dict):
        raise FaultRuleError("rule %d: a rule is a JSON object" % index)
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        raise FaultRuleError("rule %d: unknown key(s) %s" % (index, ", ".join(unknown)))
    where = obj.get("where")
    if where not in WHERE:
        raise FaultRuleError("rule %d: 'where' must be one of %s" % (index, ", ".join(WHERE)))
    actions = [a for a in ACTIONS if a in obj]
    if len(actions) > 1:
        raise FaultRuleError("rule %d: more than one action (%s)" % (index, ", ".join(actions)))
    delay = obj.get("delay", 0)
    if not _is_number(delay) or not 0 <= delay <= MAX_DELAY:
        raise FaultRuleError("rule %d: 'delay' must be seconds in [0, %d]" % (index, MAX_DELAY))
    if not actions and "delay" not in obj:
        raise FaultRuleError("rule %d: no action (one of %s, or delay)"
                             % (index, ", ".join(ACTIONS)))
    action = actions[0] if actions else None
    if action is not None and action not in ALLOWED[where]:
        raise FaultRuleError("rule %d: action %r is not available for where=%r (allowed: %s)"
                             % (index, action, where, ", ".join(sorted(ALLOWED[where]))))
    value: Any = obj.get(action) if action else None
    if action == "error":
        if not _is_int(value) or value >= 0:
            raise FaultRuleError("rule %d: 'error' must be a negative MEGA error code" % index)
    elif action == "http":
        if not _is_int(value) or not HTTP_STATUS_MIN <= value <= HTTP_STATUS_MAX:
            raise FaultRuleError("rule %d: 'http' must be a status code 400-599" % index)
    elif action == "hashcash":
        if value is True:
            value = None  # the server's --hashcash-easiness
        elif not _is_int(value) or not 0 <= value <= 255:
            raise FaultRuleError("rule %d: 'hashcash' must be an easiness 0-255 or true" % index)
    elif action == "framing":
        if value not in FRAMINGS:
            raise FaultRuleError("rule %d: 'framing' must be \"chunked\" or \"close\"" % index)
    elif action is not None and value is not True:
        raise FaultRuleError("rule %d: %r must be true" % (index, action))
    command = obj.get("command")
    if command is not None:
        if not isinstance(command, str) or not command:
            raise FaultRuleError("rule %d: 'command' must be a command name" % index)
        if where == "sc" and command not in ("sc", "wait"):
            raise FaultRuleError("rule %d: on sc, 'command' is \"sc\" or \"wait\"" % index)
        if where in ("upload", "download"):
            raise FaultRuleError("rule %d: 'command' only applies to cs and sc" % index)
    level = obj.get("level", "batch")
    if level not in ("batch", "command"):
        raise FaultRuleError("rule %d: 'level' is \"batch\" or \"command\"" % index)
    if level == "command" and not (where == "cs" and action == "error"):
        raise FaultRuleError("rule %d: level \"command\" needs where=cs and an error" % index)
    count, rate = obj.get("count"), obj.get("rate")
    if count is not None and rate is not None:
        raise FaultRuleError("rule %d: give 'count' or 'rate', not both" % index)
    if count is not None and (not _is_int(count) or count < 0):
        raise FaultRuleError("rule %d: 'count' must be an integer >= 0" % index)
    if rate is not None and (not _is_number(rate) or not 0 <= rate <= 1):
        raise FaultRuleError("rule %d: 'rate' must be a number in [0, 1]" % index)
    seed = obj.get("seed", 0)
    if not _is_int(seed):
        raise FaultRuleError("rule %d: 'seed' must be an integer" % index)
    if "seed" in obj and rate is None:
        raise FaultRuleError("rule %d: 'seed' only makes sense with 'rate'" % index)
    return Rule(index=index, where=where, action=action, value=value, command=command,
                level=level, delay=float(delay), count=count, rate=rate, seed=seed,
                source=dict(obj))


def parse_rules(objs: Any) -> list[Rule]:
    if not isinstance(objs, list):
        raise FaultRuleError("rules must be a JSON array of rule objects")
    return [parse_rule(obj, i) for i, obj in enumerate(objs)]


def parse_cli_rule(text: str) -> list[dict]:
    """One ``--fault`` argument: a rule object or an array of them (validated, as dicts)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise FaultRuleError("--fault is not valid JSON: %s" % exc) from None
    objs = value if isinstance(value, list) else [value]
    parse_rules(objs)
    return objs


class Faults:
    """The active rules; thread-safe."""

    def __init__(self, rules: list[dict] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = parse_rules(list(rules or []))
        self.fired_by_action: dict[str, int] = {}

    def replace(self, objs: Any) -> list[Rule]:
        rules = parse_rules(objs)
        with self._lock:
            self._rules = rules
        if rules:
            log.info("fault rules set: %s", json.dumps([r.source for r in rules]))
        else:
            log.info("fault rules cleared")
        return rules

    def check(self, where: str, commands: Iterable[str] = (), sub: str | None = None,
              skip_hashcash: bool = False) -> Decision | None:
        """The request-level decision for one request, or None when no rule fires."""
        names = list(commands)
        delay = 0.0
        with self._lock:
            for rule in self._rules:
                if rule.level == "command":
                    continue
                if skip_hashcash and rule.action == "hashcash":
                    continue
                if not rule.matches(where, names, sub) or not rule.decide():
                    continue
                delay += rule.delay
                if rule.action is None:
                    self._count("delay")
                    continue
                self._count(rule.action)
                log.info("fault: rule %d fires on %s: %s %r", rule.index, where, rule.action,
                         rule.value)
                return Decision(rule.action, rule.value, delay, rule.index)
        return Decision(None, None, delay) if delay else None

    def command_error(self, name: str) -> int | None:
        """A command-level error to answer instead of running command ``name``."""
        with self._lock:
            for rule in self._rules:
                if rule.level != "command" or (rule.command not in (None, name)):
                    continue
                if rule.decide():
                    self._count("error")
                    log.info("fault: rule %d replaces the result of %s with %d", rule.index,
                             name, rule.value)
                    return int(rule.value)
        return None

    def _count(self, action: str) -> None:
        self.fired_by_action[action] = self.fired_by_action.get(action, 0) + 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"rules": [r.describe() for r in self._rules],
                    "fired": dict(self.fired_by_action)}
