"""Phone trees (IVR): a declarative tree attached to a number, checked when it is saved.

```json
{"start": "welcome",
 "nodes": {
   "welcome": {"play": {"file": "welcome.wav"}, "next": "menu"},
   "menu":    {"gather": {"prompt": {"tone": 440, "ms": 300}, "digits": 1, "timeout_s": 5,
                          "retries": 2, "finish_on": "#"},
               "branches": {"1": "sales", "2": "voicemail"}, "default": "menu", "no_input": "bye"},
   "sales":   {"transfer": {"call": "<call id>"}},
   "voicemail": {"record": {"prompt": {"tone": 1000, "ms": 200}, "max_s": 60}, "next": "bye"},
   "bye":     {"hangup": {"prompt": {"file": "goodbye.ogg"}}}}}
```

Each node does one thing: `play` a prompt then go to `next`; `gather` digits (with its own
prompt, timeout and retries) and branch on them (`default` on digits that match no branch,
`no_input` when the caller pressed nothing); `transfer` the caller to a user or a call; `record`
a message; `hangup`. A prompt is a WAV or Ogg file from the prompts directory, a recording id, a
tone (`{"tone": Hz, "ms": n}`) or silence (`{"silence_ms": n}`).

`PhoneTree.parse` refuses (TreeError, naming the node) unknown fields, references to nodes that
do not exist, nodes never reached from `start`, dead ends (nodes from which no end is reachable)
and loops that need no caller input to go round (`play`, `record` and `no_input` edges only: a
caller who presses nothing would go round for ever). Menus that come back to themselves after a
key press are fine: the caller drives them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

TERMINAL = ("hangup", "transfer")
ACTIONS = ("play", "gather", "transfer", "record", "hangup")
NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
PROMPT_FILE = re.compile(r"[A-Za-z0-9_.-]{1,128}\.(wav|ogg|opus)\Z")
DIGITS = "0123456789*#ABCD"
MAX_NODES = 200
MAX_VISITS = 200     # a caller pressing keys round a menu for ever is hung up after this many steps


class TreeError(ValueError):
    """A tree that cannot be saved; `node` names where (None: the tree as a whole)."""

    def __init__(self, node: str | None, message: str) -> None:
        super().__init__(f"node {node!r}: {message}" if node else message)
        self.node = node


@dataclass
class Prompt:
    file: str | None = None
    recording: str | None = None
    tone_hz: float | None = None
    ms: int = 0

    @classmethod
    def parse(cls, value: object, node: str) -> Prompt:
        if not isinstance(value, dict):
            raise TreeError(node, "a prompt is an object: {file}, {recording}, {tone, ms} or {silence_ms}")
        keys = set(value)
        if keys == {"file"}:
            name = value["file"]
            if not isinstance(name, str) or not PROMPT_FILE.match(name) or ".." in name:
                raise TreeError(node, "prompt file must be a plain name ending .wav, .ogg or .opus")
            return cls(file=name)
        if keys == {"recording"}:
            if not isinstance(value["recording"], str) or not value["recording"]:
                raise TreeError(node, "prompt recording must be a recording id")
            return cls(recording=value["recording"])
        if keys <= {"tone", "ms"} and "tone" in keys:
            tone, ms = value["tone"], value.get("ms", 500)
            if not _number(tone) or not 50 <= tone <= 4000:
                raise TreeError(node, "prompt tone must be 50..4000 Hz")
            if not _integer(ms) or not 20 <= ms <= 30000:
                raise TreeError(node, "prompt ms must be 20..30000")
            return cls(tone_hz=float(tone), ms=int(ms))
        if keys == {"silence_ms"}:
            if not _integer(value["silence_ms"]) or not 20 <= value["silence_ms"] <= 30000:
                raise TreeError(node, "silence_ms must be 20..30000")
            return cls(ms=int(value["silence_ms"]))
        raise TreeError(node, f"unknown prompt {sorted(keys)}")

    def to_json(self) -> dict:
        if self.file:
            return {"file": self.file}
        if self.recording:
            return {"recording": self.recording}
        if self.tone_hz is not None:
            return {"tone": self.tone_hz, "ms": self.ms}
        return {"silence_ms": self.ms}


@dataclass
class Node:
    id: str
    action: str
    prompt: Prompt | None = None
    next: str | None = None
    # gather
    digits: int = 1
    timeout_s: float = 5.0
    retries: int = 2
    finish_on: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    default: str | None = None
    no_input: str | None = None
    # transfer
    target: dict | None = None
    # record
    max_s: float = 60.0

    def edges(self) -> list[tuple[str, bool]]:
        """(next node, taken without caller input)."""
        out: list[tuple[str, bool]] = []
        if self.next:
            out.append((self.next, True))
        if self.action == "gather":
            out += [(target, False) for target in self.branches.values()]
            if self.default:
                out.append((self.default, False))
            if self.no_input:
                out.append((self.no_input, True))
        return out

    @property
    def ends(self) -> bool:
        """The call can leave the tree here (hang up or be transferred)."""
        if self.action in TERMINAL:
            return True
        if self.action == "record" and not self.next:
            return True
        if self.action == "gather" and not (self.default and self.no_input):
            return True   # retries run out with nowhere to go: goodbye
        return False

    def to_json(self) -> dict:
        body: dict = {}
        if self.action == "play":
            body = {"play": self.prompt.to_json(), "next": self.next}
        elif self.action == "gather":
            gather: dict = {"digits": self.digits, "timeout_s": self.timeout_s, "retries": self.retries}
            if self.prompt:
                gather["prompt"] = self.prompt.to_json()
            if self.finish_on:
                gather["finish_on"] = self.finish_on
            body = {"gather": gather, "branches": dict(self.branches)}
            if self.default:
                body["default"] = self.default
            if self.no_input:
                body["no_input"] = self.no_input
        elif self.action == "transfer":
            body = {"transfer": dict(self.target)}
        elif self.action == "record":
            record: dict = {"max_s": self.max_s}
            if self.prompt:
                record["prompt"] = self.prompt.to_json()
            if self.finish_on:
                record["finish_on"] = self.finish_on
            body = {"record": record}
            if self.next:
                body["next"] = self.next
        else:
            body = {"hangup": {"prompt": self.prompt.to_json()} if self.prompt else {}}
        return body


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _only(node: str, value: dict, allowed: set[str], what: str) -> None:
    extra = set(value) - allowed
    if extra:
        raise TreeError(node, f"unknown {what} field(s) {sorted(extra)}")


def _node_ref(node: str, value: object, what: str) -> str:
    if not isinstance(value, str) or not NODE_ID.match(value):
        raise TreeError(node, f"{what} must name a node")
    return value


def parse_node(node_id: str, body: object) -> Node:
    if not NODE_ID.match(node_id):
        raise TreeError(node_id, "node ids are 1..64 of [A-Za-z0-9_.-]")
    if not isinstance(body, dict):
        raise TreeError(node_id, "a node is an object")
    actions = [a for a in ACTIONS if a in body]
    if len(actions) != 1:
        raise TreeError(node_id, f"a node does exactly one of {', '.join(ACTIONS)}")
    action = actions[0]
    spec = body[action]
    node = Node(node_id, action)
    if action == "play":
        _only(node_id, body, {"play", "next"}, "node")
        node.prompt = Prompt.parse(spec, node_id)
        if "next" not in body:
            raise TreeError(node_id, "a play node needs 'next' (a dead end otherwise)")
        node.next = _node_ref(node_id, body["next"], "next")
    elif action == "gather":
        _only(node_id, body, {"gather", "branches", "default", "no_input"}, "node")
        if not isinstance(spec, dict):
            raise TreeError(node_id, "gather is an object")
        _only(node_id, spec, {"prompt", "digits", "timeout_s", "retries", "finish_on"}, "gather")
        if "prompt" in spec:
            node.prompt = Prompt.parse(spec["prompt"], node_id)
        node.digits = spec.get("digits", 1)
        node.timeout_s = spec.get("timeout_s", 5.0)
        node.retries = spec.get("retries", 2)
        node.finish_on = spec.get("finish_on")
        if not _integer(node.digits) or not 1 <= node.digits <= 32:
            raise TreeError(node_id, "gather.digits must be 1..32")
        if not _number(node.timeout_s) or not 0.5 <= node.timeout_s <= 120:
            raise TreeError(node_id, "gather.timeout_s must be 0.5..120")
        if not _integer(node.retries) or not 0 <= node.retries <= 10:
            raise TreeError(node_id, "gather.retries must be 0..10")
        if node.finish_on is not None and (not isinstance(node.finish_on, str)
                                           or len(node.finish_on) != 1 or node.finish_on not in DIGITS):
            raise TreeError(node_id, "gather.finish_on must be one DTMF key")
        branches = body.get("branches")
        if not isinstance(branches, dict) or not branches:
            raise TreeError(node_id, "a gather node needs 'branches' ({digits: node})")
        for digits, target in branches.items():
            if not isinstance(digits, str) or not digits or any(c not in DIGITS for c in digits) \
                    or len(digits) > node.digits:
                raise TreeError(node_id, f"branch {digits!r} is not up to {node.digits} DTMF keys")
            node.branches[digits] = _node_ref(node_id, target, f"branch {digits!r}")
        if "default" in body:
            node.default = _node_ref(node_id, body["default"], "default")
        if "no_input" in body:
            node.no_input = _node_ref(node_id, body["no_input"], "no_input")
    elif action == "transfer":
        _only(node_id, body, {"transfer"}, "node")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("call", "user") \
                or not isinstance(next(iter(spec.values())), str):
            raise TreeError(node_id, "transfer is {'call': id} or {'user': identity}")
        node.target = dict(spec)
    elif action == "record":
        _only(node_id, body, {"record", "next"}, "node")
        if not isinstance(spec, dict):
            raise TreeError(node_id, "record is an object")
        _only(node_id, spec, {"prompt", "max_s", "finish_on"}, "record")
        if "prompt" in spec:
            node.prompt = Prompt.parse(spec["prompt"], node_id)
        node.max_s = spec.get("max_s", 60.0)
        if not _number(node.max_s) or not 1 <= node.max_s <= 3600:
            raise TreeError(node_id, "record.max_s must be 1..3600")
        node.finish_on = spec.get("finish_on")
        if node.finish_on is not None and (not isinstance(node.finish_on, str)
                                           or len(node.finish_on) != 1 or node.finish_on not in DIGITS):
            raise TreeError(node_id, "record.finish_on must be one DTMF key")
        if "next" in body:
            node.next = _node_ref(node_id, body["next"], "next")
    else:
        _only(node_id, body, {"hangup"}, "node")
        if not isinstance(spec, dict):
            raise TreeError(node_id, "hangup is an object ({} or {'prompt': ...})")
        _only(node_id, spec, {"prompt"}, "hangup")
        if "prompt" in spec:
            node.prompt = Prompt.parse(spec["prompt"], node_id)
    return node


@dataclass
class PhoneTree:
    start: str
    nodes: dict[str, Node]

    @classmethod
    def parse(cls, value: object) -> PhoneTree:
        if not isinstance(value, dict):
            raise TreeError(None, "a phone tree is an object {start, nodes}")
        _only("", value, {"start", "nodes"}, "tree")
        nodes_value = value.get("nodes")
        if not isinstance(nodes_value, dict) or not nodes_value:
            raise TreeError(None, "a phone tree needs 'nodes'")
        if len(nodes_value) > MAX_NODES:
            raise TreeError(None, f"at most {MAX_NODES} nodes")
        nodes = {node_id: parse_node(node_id, body) for node_id, body in nodes_value.items()}
        start = value.get("start")
        if not isinstance(start, str) or start not in nodes:
            raise TreeError(None, f"'start' must name one of the nodes, got {start!r}")
        tree = cls(start, nodes)
        tree._check()
        return tree

    def _check(self) -> None:
        for node in self.nodes.values():
            for target, _ in node.edges():
                if target not in self.nodes:
                    raise TreeError(node.id, f"refers to {target!r}, which is not a node")
        reachable = self._reach(self.start)
        for node_id in self.nodes:
            if node_id not in reachable:
                raise TreeError(node_id, "is never reached from start")
        # dead ends: nodes from which no end is reachable
        can_end = {n.id for n in self.nodes.values() if n.ends}
        changed = True
        while changed:
            changed = False
            for node in self.nodes.values():
                if node.id not in can_end and any(t in can_end for t, _ in node.edges()):
                    can_end.add(node.id)
                    changed = True
        for node_id in self.nodes:
            if node_id not in can_end:
                raise TreeError(node_id, "is a dead end: no hangup, transfer or end can be reached from it")
        # loops without caller input: cycles in the graph of automatic edges
        state: dict[str, int] = {}

        def visit(node_id: str) -> None:
            state[node_id] = 1
            for target, automatic in self.nodes[node_id].edges():
                if not automatic:
                    continue
                if state.get(target) == 1:
                    raise TreeError(target, "is in a loop that goes round without any key press")
                if target not in state:
                    visit(target)
            state[node_id] = 2
        for node_id in self.nodes:
            if node_id not in state:
                visit(node_id)

    def _reach(self, start: str) -> set[str]:
        seen = {start}
        todo = [start]
        while todo:
            for target, _ in self.nodes[todo.pop()].edges():
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    def prompts(self) -> list[Prompt]:
        return [n.prompt for n in self.nodes.values() if n.prompt is not None]

    def to_json(self) -> dict:
        return {"start": self.start, "nodes": {k: n.to_json() for k, n in self.nodes.items()}}
