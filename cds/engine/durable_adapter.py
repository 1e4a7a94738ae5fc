"""Run compiled strata in durable-rules, one fresh session per stratum.

What this adapter guards against (docs/architecture.md, "The engine"):

* durable's ``Host`` starts two timer threads that call into the C core on
  their own, and concurrent calls into the core crash the process. So no
  ``Host`` is ever built: this module drives the C module directly, and one
  process-wide lock serializes every call into it. Parallelism comes from
  processes (gunicorn workers, ``cds batch``), not threads.
* A fact no rule matches makes a batch assert raise and silently drops the
  batch's other facts. Facts are asserted one at a time and "not handled"
  is ignored per fact, so an irrelevant fact can never hide a red flag.
* durable swallows exceptions raised in actions into session state. Here
  actions are called by this adapter, so an exception propagates; the
  session is abandoned and deleted, and the evaluation fails naming the rule.
* Sessions are always deleted (``delete_state``), or memory grows. But
  durable 2.0.28's ``createStateNode`` leaves ``context.messages`` and
  ``context.stateFact`` uninitialized; they are written only when an action
  starts, and ``deleteStateNode`` frees them. Deleting a session in which
  no rule fired freed garbage (seen: "free(): invalid pointer", SIGSEGV,
  depending on heap layout; valgrind shows the invalid free). So every
  stratum carries a sentinel rule that fires once per session, which makes
  the core write, then free and clear, that context before deletion.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import durable_rules_engine as _core

from cds.errors import CdsError, EngineError, RuleActionError

# durable's result codes for an assert (durable/engine.py, _handle_result).
_OK, _NOT_HANDLED, _OBSERVED = 0, 1, 2

#: The sentinel rule and fact (see the module docstring).
_SENTINEL_RULE = "session-opened"
_SENTINEL_TYPE = "$session"

_lock = threading.RLock()
_handles: dict[str, list[int]] = {}
_sids = itertools.count(1)


def _reset_after_fork() -> None:
    # A lock held by another thread at fork time would deadlock the child
    # (``cds batch`` forks workers from a process that has evaluated).
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_reset_after_fork)


@dataclass(frozen=True)
class Match:
    """One rule firing as the engine reports it."""

    stratum: int
    rule_index: int
    #: pattern alias -> the matched fact, as asserted
    facts: Mapping[str, Mapping[str, Any]]


#: Called for every firing; returns the new facts (engine views) to assert.
OnMatch = Callable[[Match], Iterable[Mapping[str, Any]]]


class Engine:
    """Compiled strata registered in durable under a content-unique name."""

    def __init__(self, key: str, strata: Sequence[Mapping[str, Any]],
                 rule_names: Sequence[str]) -> None:
        self.key = key
        self.strata = strata
        self.rule_names = rule_names
        with _lock:
            if key not in _handles:
                handles = []
                for index, stratum in enumerate(strata):
                    definition = json.dumps({**stratum["definition"], _SENTINEL_RULE: {
                        "all": [{"m": {"type": _SENTINEL_TYPE}}]}})
                    try:
                        handles.append(_core.create_ruleset(f"{key}-s{stratum['stratum']}-{index}", definition))
                    except Exception as exc:  # noqa: BLE001 - the C core raises a bare error type
                        raise EngineError(
                            f"durable-rules refused the rules of stratum {stratum['stratum']}: {exc} (error 108: "
                            "one identical condition shared by more than 256 rules; 303: too many rules)") from exc
                _handles[key] = handles
            self._handles = _handles[key]

    def run(self, facts: Sequence[Mapping[str, Any]], on_match: OnMatch) -> list[Mapping[str, Any]]:
        """Run every stratum in order; return the input plus every new fact."""
        known = list(facts)
        # A fact consumed by several strata is encoded once per evaluation.
        encoded: dict[int, str] = {}
        with _lock:
            for index, stratum in enumerate(self.strata):
                self._run_stratum(stratum["stratum"], stratum, self._handles[index], known, on_match, encoded)
        return known

    def _run_stratum(self, level: int, stratum: Mapping[str, Any], handle: int,
                     known: list[Mapping[str, Any]], on_match: OnMatch, encoded: dict[int, str]) -> None:
        consumed = stratum["consumed"]
        sid = str(next(_sids))
        try:
            state_handle = self._assert(handle, {"id": "$session", "type": _SENTINEL_TYPE}, sid, {})
            if state_handle is None:
                raise EngineError("the engine did not open a session")
            for fact in known:
                if fact["type"] in consumed:
                    self._assert(handle, fact, sid, encoded)
            result = _core.start_action_for_state(handle, state_handle)
            while result:
                state, message = result[0], json.loads(result[1])
                name, matched = next(iter(message.items()))
                if name == _SENTINEL_RULE:
                    _core.update_state(handle, state)
                    next_message = _core.complete_and_start_action(handle, state_handle)
                    result = (state, next_message) if next_message else None
                    continue
                index = stratum["rules"][name]
                try:
                    new_facts = list(on_match(Match(level, index, matched)))
                except CdsError:
                    _core.abandon_action(handle, state_handle)
                    raise  # already says what went wrong and which rule
                except Exception as exc:  # noqa: BLE001 - any failure names its rule
                    _core.abandon_action(handle, state_handle)
                    raise RuleActionError(self.rule_names[index], exc) from exc
                for fact in new_facts:
                    known.append(fact)
                    if fact["type"] in consumed:
                        self._assert(handle, fact, sid, encoded)
                _core.update_state(handle, state)
                next_message = _core.complete_and_start_action(handle, state_handle)
                result = (state, next_message) if next_message else None
        finally:
            try:
                _core.delete_state(handle, sid)
            except Exception:  # noqa: BLE001 - nothing was created for this sid
                pass

    @staticmethod
    def _assert(handle: int, fact: Mapping[str, Any], sid: str, encoded: dict[int, str]) -> int | None:
        try:
            if "sid" in fact or not fact:
                payload = json.dumps({**fact, "sid": sid})
            else:
                body = encoded.get(id(fact))
                if body is None:
                    # id(fact) is stable: ``known`` holds every fact for the run.
                    body = encoded[id(fact)] = json.dumps(fact)[1:]
                payload = f'{{"sid":"{sid}",{body}'
            code, state_handle = _core.assert_fact(handle, payload)
        except Exception as exc:  # noqa: BLE001 - the C core raises a bare error type
            raise EngineError(f"the engine refused fact {fact.get('id')}: {exc}") from exc
        if code == _OBSERVED:
            # Ids are unique per evaluation, so equal content means a bug here.
            raise EngineError(f"the engine saw fact {fact.get('id')} twice")
        return state_handle if code == _OK else None
