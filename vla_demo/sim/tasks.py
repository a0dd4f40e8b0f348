"""Task families, the instruction grammar with its splits, the parser and the success checks.

A *task family* (``pick``, ``push``, ``place``, ``stack``, ``reach``) is a small class that knows
how to sample a scene and an instruction for itself and how to decide success. The same grammar
runs both ways: :meth:`TaskFamily.sample` renders templates into instructions, and
:func:`parse_instruction` maps any typed text back to a :class:`Goal` when it can.

Splits (ARCHITECTURE section 4):

* ``train``: training templates; targets drawn from the training colour-shape combinations.
* ``heldout``: new templates and word orders built only from training words (tested), same
  targets as ``train``.
* ``heldout-combos``: training templates; the target is one of ``HELDOUT_COMBOS``, which is
  never the target (nor the stacking base) of a ``train`` or ``heldout`` episode, and since
  2026-12-06 not in their scenes at all (:func:`scene_combos`).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace

import numpy as np

from vla_demo.constants import (
    COLOURS,
    DIRECTIONS,
    FAMILIES,
    FLAT_TOPPED_SHAPES,
    HELDOUT_COMBOS,
    RECEPTACLES,
    SHAPES,
    SPLITS,
    UNNAMED_COLOURS,
)
from vla_demo.sim import scene as sc

# ----------------------------------------------------------------------------- vocabulary

# Words the user may type for each concept. The first entry is the canonical word.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {"cube": ("cube", "block"), "cylinder": ("cylinder", "can"), "sphere": ("sphere", "ball")}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLOURS}
RECEPTACLE_WORDS: dict[str, tuple[str, ...]] = {"tray": ("tray", "box"), "plate": ("plate", "dish")}
RECEPTACLE_PREPS: dict[str, tuple[str, ...]] = {"tray": ("in", "into"), "plate": ("on", "onto")}
DIRECTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("left", "to the left"),
    "right": ("right", "to the right"),
    "forward": ("forward", "away from the robot"),
    "backward": ("backward", "back", "toward the robot", "towards the robot"),
}

_WORD_TO_SHAPE = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}
_WORD_TO_COLOUR = {w: c for c, ws in COLOUR_WORDS.items() for w in ws}
_WORD_TO_RECEPTACLE = {w: r for r, ws in RECEPTACLE_WORDS.items() for w in ws}
_DEST_PREPS = {"on", "onto", "in", "into", "of", "to"}


def all_combos() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


def target_combos(split: str, family: str) -> list[tuple[str, str]]:
    """Colour-shape combinations that may be the target of ``family`` in ``split``."""
    check_split(split)
    flat_only = family == "stack"
    combos = [c for c in all_combos() if not flat_only or c[1] in FLAT_TOPPED_SHAPES]
    if split == "heldout-combos":
        return [c for c in combos if c in HELDOUT_COMBOS]
    return [c for c in combos if c not in HELDOUT_COMBOS]


def scene_combos(split: str) -> list[tuple[str, str]]:
    """Colour-shape combinations that may stand in a scene of ``split``: in ``train`` and ``heldout``
    scenes not the held-out combinations, even as distractors (a combination seen only as a
    distractor is one the policy learns never to pick)."""
    check_split(split)
    return all_combos() if split == "heldout-combos" else [c for c in all_combos() if c not in HELDOUT_COMBOS]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose from {list(SPLITS)}")


# ----------------------------------------------------------------------------- goals


@dataclass(frozen=True)
class ObjectRef:
    """An object as named in an instruction; either part may be missing ("the cube", "the red one")."""

    colour: str | None = None
    shape: str | None = None

    def text(self, rng: np.random.Generator | None = None) -> str:
        shape_word = "one"
        if self.shape is not None:
            words = SHAPE_WORDS[self.shape]
            shape_word = words[int(rng.integers(len(words)))] if rng is not None else words[0]
        return f"{self.colour} {shape_word}" if self.colour else shape_word


@dataclass(frozen=True)
class Goal:
    """What an instruction asks for, independent of the wording.

    ``destination`` is a receptacle kind for ``place`` and an :class:`ObjectRef` for ``stack``;
    ``direction`` is set for ``push`` only.
    """

    family: str
    target: ObjectRef
    destination: ObjectRef | str | None = None
    direction: str | None = None


@dataclass(frozen=True)
class ParseResult:
    goal: Goal | None
    reason: str = ""  # why the text could not be parsed (empty when ``goal`` is set)

    @property
    def ok(self) -> bool:
        return self.goal is not None


@dataclass(frozen=True)
class ResolvedGoal:
    """A goal bound to a scene: indices into ``SceneSpec.objects`` / ``.receptacles``."""

    goal: Goal
    target: int
    destination: int | None = None  # object index (stack) or receptacle index (place)


@dataclass
class WorldView:
    """What success checks may look at, filled in by the env after every control step.

    Attributes:
        positions: (n_objects, 3) object centres, m.
        yaws: (n_objects,) object yaw angles about world z, rad.
        initial_positions: (n_objects, 3) centres at reset (for pushes).
        receptacles: (n_receptacles, 3) receptacle base positions.
        ee_pos: (3,) grasp-point position.
        held: indices of objects touched by both fingers.
        touched: indices of objects touched by either finger.
    """

    positions: np.ndarray
    yaws: np.ndarray
    initial_positions: np.ndarray
    receptacles: np.ndarray
    ee_pos: np.ndarray
    held: frozenset[int]
    touched: frozenset[int]


# ----------------------------------------------------------------------------- families

RESTING_Z = sc.OBJECT_HALF  # centre height of an object lying on the table


class TaskFamily:
    """Base class: templates per phrasing split, scene sampling and a success check.

    Templates use the slots ``{obj}`` (the target), ``{dest}`` (destination name), ``{prep}``
    (its preposition) and ``{dir}`` (a push direction phrase).
    """

    name: str = ""
    templates: dict[str, tuple[str, ...]] = {}
    flat_only = False

    def phrasings(self, split: str) -> tuple[str, ...]:
        check_split(split)
        return self.templates["heldout" if split == "heldout" else "train"]

    # -- sampling ---------------------------------------------------------------------------
    def sample(
        self, rng: np.random.Generator, split: str, n_objects: int, two_candidates: bool = False,
        shape_rival: bool = False, shape_only: bool = False,
    ) -> tuple[sc.SceneSpec, Goal, str]:
        """Sample (scene, goal, instruction) for one episode of this family.

        ``two_candidates`` adds an object of the target's shape in another colour (the evaluation's
        language test); ``shape_rival`` one of the target's colour in another shape, so only the
        shape word tells the two apart. Neither draws from ``rng`` when off: scenes sampled without
        them are the same as before they existed. ``shape_only`` samples another kind of scene
        (:meth:`sample_shape_only`).
        """
        if shape_only:
            return self.sample_shape_only(rng, split, n_objects)
        combos = target_combos(split, self.name)
        target = combos[int(rng.integers(len(combos)))]
        required = [target]
        required += self.extra_objects(rng, split, target)
        seen = scene_combos(split)
        if two_candidates:
            required += _rival(rng, [(c, target[1]) for c in COLOURS if c != target[0]], seen, required)
        if shape_rival:
            required += _rival(rng, [(target[0], s) for s in SHAPES if s != target[1]], seen, required)
        n_objects = max(n_objects, len(required))
        pool = [c for c in seen if c not in required and not self.confusable(c, required)]
        order = rng.permutation(len(pool))
        fill = [pool[i] for i in order[: n_objects - len(required)]]
        goal = self.make_goal(rng, target, required)
        scene = self.layout(rng, required + fill, goal)
        return scene, goal, self.render(goal, self.phrasings(split), rng)

    def sample_shape_only(self, rng: np.random.Generator, split: str, n_objects: int) -> tuple[sc.SceneSpec, Goal, str]:
        """A scene whose target is the only object of its shape, named by its shape alone ("pick up
        the cube"), with objects in named and unnamed colours (``UNNAMED_COLOURS``) and always one
        of the target's colour in another shape. Colour tells nothing here, so these episodes teach
        shape as such, in colours no named combination pairs it with. The split's scene rule holds
        for named colours (no held-out combination in ``train`` or ``heldout`` scenes)."""
        if self.name not in SHAPE_ONLY_FAMILIES:
            raise ValueError("stack names two objects, and three shapes leave no shape-only scene with a base of "
                             "its own shape: shape-only scenes are for pick, push, place and reach")
        seen = scene_combos(split) + [(c, s) for c in UNNAMED_COLOURS for s in SHAPES]
        target = seen[int(rng.integers(len(seen)))]
        others = [c for c in seen if c[1] != target[1]]
        rival = [c for c in others if c[0] == target[0]]
        required = [target, rival[int(rng.integers(len(rival)))]]
        pool = [c for c in others if c not in required]
        fill = [pool[i] for i in rng.permutation(len(pool))[: max(n_objects, 2) - 2]]
        goal = replace(self.make_goal(rng, target, required), target=ObjectRef(None, target[1]))
        scene = self.layout(rng, required + fill, goal)
        return scene, goal, self.render(goal, self.phrasings(split), rng)

    def confusable(self, combo: tuple[str, str], required: list[tuple[str, str]]) -> bool:
        """Distractors never repeat a combination, so a colour + shape always names one object."""
        return combo in required

    def extra_objects(self, rng, split, target) -> list[tuple[str, str]]:
        return []

    def goal_positions(self, rg: ResolvedGoal, view: WorldView) -> np.ndarray:
        """(6,) where the task happens: the target's centre, then where it should end up (the
        target itself for families without a destination). Training labels for the model's
        auxiliary goal head; never shown to a policy as input."""
        target = view.positions[rg.target]
        return np.concatenate([target, self.destination(rg, view, target)]).astype(np.float32)

    def destination(self, rg: ResolvedGoal, view: WorldView, target: np.ndarray) -> np.ndarray:
        return target

    def make_goal(self, rng, target, required) -> Goal:
        return Goal(self.name, ObjectRef(*target))

    def layout(self, rng, combos, goal) -> sc.SceneSpec:
        return sc.sample_layout(rng, combos, [])

    def render(self, goal: Goal, templates: tuple[str, ...], rng: np.random.Generator) -> str:
        template = templates[int(rng.integers(len(templates)))]
        return fill_template(template, goal, rng)

    # -- success ----------------------------------------------------------------------------
    def success(self, rg: ResolvedGoal, view: WorldView) -> bool:
        raise NotImplementedError


def _rival(rng: np.random.Generator, options: list[tuple[str, str]], seen: list[tuple[str, str]],
           required: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One of ``options`` that the split's scenes may hold and the scene does not hold yet (none
    if there is no such combination)."""
    options = [r for r in options if r in seen and r not in required]
    return [options[int(rng.integers(len(options)))]] if options else []


def fill_template(template: str, goal: Goal, rng: np.random.Generator | None = None) -> str:
    """Render one template for ``goal``; synonyms are drawn from ``rng`` (canonical when None)."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))] if rng is not None else options[0]

    slots = {"obj": goal.target.text(rng)}
    if isinstance(goal.destination, ObjectRef):
        slots["dest"] = goal.destination.text(rng)
    elif isinstance(goal.destination, str):
        slots["dest"] = pick(RECEPTACLE_WORDS[goal.destination])
        slots["prep"] = pick(RECEPTACLE_PREPS[goal.destination])
    if goal.direction is not None:
        slots["dir"] = pick(DIRECTION_PHRASES[goal.direction])
    return template.format(**slots)


class Pick(TaskFamily):
    """Pick up / lift: success once the target is held at least 5 cm above the table."""

    name = "pick"
    lift = 0.05
    templates = {
        "train": (
            "pick up the {obj}",
            "lift the {obj}",
            "grab the {obj} and lift it",
            "pick the {obj} up",
            "raise the {obj}",
        ),
        "heldout": ("lift up the {obj}", "the {obj}, pick it up", "grab and raise the {obj}", "up, lift the {obj}"),
    }

    def success(self, rg, view):
        z = view.positions[rg.target][2]
        return bool(z >= RESTING_Z + self.lift and rg.target in view.held)


class Push(TaskFamily):
    """Push in a direction: the target slides at least 8 cm that way and stays on the table."""

    name = "push"
    distance = 0.08
    max_drift = 0.06
    travel = 0.14  # room left clear in the push direction
    templates = {
        "train": ("push the {obj} {dir}", "slide the {obj} {dir}", "nudge the {obj} {dir}"),
        "heldout": ("push {dir} the {obj}", "{dir}, slide the {obj}", "the {obj}, nudge it {dir}"),
    }

    def make_goal(self, rng, target, required):
        dirs = list(DIRECTIONS)
        return Goal(self.name, ObjectRef(*target), direction=dirs[int(rng.integers(len(dirs)))])

    def layout(self, rng, combos, goal):
        # Choose the target's spot first so that the push path stays on the table and clear.
        d = np.array(DIRECTIONS[goal.direction])
        lo = np.array([sc.SPAWN_X[0], sc.SPAWN_Y[0]]) + np.maximum(-d, 0) * self.travel
        hi = np.array([sc.SPAWN_X[1], sc.SPAWN_Y[1]]) - np.maximum(d, 0) * self.travel
        xy = rng.uniform(lo, hi)
        path = [tuple(xy + d * s) for s in (-0.08, 0.05, 0.10, 0.15)]
        return sc.sample_layout(rng, combos, [], reserved={0: tuple(xy)}, keepout=path)

    def destination(self, rg, view, target):
        start = view.initial_positions[rg.target]
        return np.array([*(start[:2] + self.distance * np.array(DIRECTIONS[rg.goal.direction])), start[2]])

    def success(self, rg, view):
        d = np.array(DIRECTIONS[rg.goal.direction])
        moved = view.positions[rg.target][:2] - view.initial_positions[rg.target][:2]
        along = float(moved @ d)
        drift = abs(float(moved @ np.array([-d[1], d[0]])))
        on_table = view.positions[rg.target][2] < RESTING_Z + 0.02
        return bool(along >= self.distance and drift <= self.max_drift and on_table)


class Place(TaskFamily):
    """Put X in the tray / on the plate: X rests inside the receptacle, released."""

    name = "place"
    templates = {
        "train": (
            "put the {obj} {prep} the {dest}",
            "place the {obj} {prep} the {dest}",
            "move the {obj} to the {dest}",
            "drop the {obj} {prep} the {dest}",
        ),
        "heldout": ("{prep} the {dest}, put the {obj}", "put {prep} the {dest} the {obj}", "the {obj}, move it to the {dest}"),
    }

    def make_goal(self, rng, target, required):
        return Goal(self.name, ObjectRef(*target), destination=RECEPTACLES[int(rng.integers(len(RECEPTACLES)))])

    def layout(self, rng, combos, goal):
        return sc.sample_layout(rng, combos, list(RECEPTACLES))

    def destination(self, rg, view, target):
        return view.receptacles[rg.destination]

    def success(self, rg, view):
        kind = rg.goal.destination
        rel = view.positions[rg.target] - view.receptacles[rg.destination]
        inside = (
            max(abs(rel[0]), abs(rel[1])) <= sc.TRAY_INNER_HALF - 0.01
            if kind == "tray"
            else math.hypot(rel[0], rel[1]) <= sc.PLATE_RADIUS - 0.01
        )
        resting = rel[2] <= sc.RECEPTACLE_FLOOR[kind] + 2 * sc.OBJECT_HALF + 0.005
        return bool(inside and resting and rg.target not in view.touched)


class Stack(TaskFamily):
    """Stack X on Y (both flat-topped): X rests centred on Y, released, Y still on the table."""

    name = "stack"
    templates = {
        "train": (
            "stack the {obj} on the {dest}",
            "put the {obj} on top of the {dest}",
            "place the {obj} on the {dest}",
            # Both argument orders: with only "{obj} ... {dest}" phrasings the policy learnt "the first
            # object named moves" and grabbed the base in 14 of 16 held-out episodes (2026-12-02).
            "onto the {dest}, place the {obj}",
        ),
        "heldout": ("on the {dest}, stack the {obj}", "put on top of the {dest} the {obj}", "stack on the {dest} the {obj}"),
    }

    def extra_objects(self, rng, split, target):
        # The base is named in the instruction too, so it is always a training combination.
        allowed = [c for c in target_combos("train", self.name) if c != target]
        return [allowed[int(rng.integers(len(allowed)))]]

    def make_goal(self, rng, target, required):
        return Goal(self.name, ObjectRef(*target), destination=ObjectRef(*required[1]))

    def destination(self, rg, view, target):
        return view.positions[rg.destination]

    def success(self, rg, view):
        top, base = view.positions[rg.target], view.positions[rg.destination]
        centred = math.hypot(top[0] - base[0], top[1] - base[1]) <= sc.OBJECT_HALF
        on_top = abs(top[2] - base[2] - 2 * sc.OBJECT_HALF) <= 0.012
        base_down = base[2] <= RESTING_Z + 0.01
        return bool(centred and on_top and base_down and rg.target not in view.touched)


class Reach(TaskFamily):
    """Reach / touch X: the grasp point comes within 5 cm of the target's centre."""

    name = "reach"
    radius = 0.05
    templates = {
        "train": ("touch the {obj}", "reach the {obj}", "move to the {obj}", "go to the {obj}", "reach for the {obj}"),
        "heldout": ("go and touch the {obj}", "the {obj}, touch it", "move to and touch the {obj}"),
    }

    def success(self, rg, view):
        return bool(np.linalg.norm(view.ee_pos - view.positions[rg.target]) <= self.radius)


TASK_FAMILIES: dict[str, TaskFamily] = {f.name: f for f in (Pick(), Push(), Place(), Stack(), Reach())}
assert tuple(TASK_FAMILIES) == FAMILIES
# The families a shape-only scene (:meth:`TaskFamily.sample_shape_only`) can name its target in:
# stack names a base too, and three shapes leave no scene where both are the only one of theirs.
SHAPE_ONLY_FAMILIES: tuple[str, ...] = tuple(f for f in FAMILIES if f != "stack")


def get_family(name: str) -> TaskFamily:
    if name not in TASK_FAMILIES:
        raise ValueError(f"unknown task family {name!r}: choose from {list(TASK_FAMILIES)}")
    return TASK_FAMILIES[name]


def template_words(split: str) -> set[str]:
    """Every word a split's phrasings can produce (templates x synonyms)."""
    words: set[str] = set()
    for fam in TASK_FAMILIES.values():
        for t in fam.phrasings(split):
            words.update(tokenize(re.sub(r"\{\w+\}", " ", t)))
    for table in (SHAPE_WORDS, COLOUR_WORDS, RECEPTACLE_WORDS, RECEPTACLE_PREPS, DIRECTION_PHRASES):
        for options in table.values():
            for phrase in options:
                words.update(tokenize(phrase))
    return words


# ----------------------------------------------------------------------------- parsing

_PUSH_VERBS = {"push", "slide", "nudge", "shove"}
_PICK_VERBS = {"pick", "lift", "grab", "raise"}
_REACH_VERBS = {"touch", "reach", "go", "move", "point"}
_STACK_WORDS = {"stack", "top"}


def tokenize(text: str) -> list[str]:
    """Lower-case words; punctuation separates words and is dropped."""
    return re.findall(r"[a-z]+", text.lower())


@dataclass(frozen=True)
class _Mention:
    ref: ObjectRef
    start: int  # token index where the noun phrase starts
    is_destination: bool
    end: int  # one past its last token


def _mentions(tokens: list[str]) -> list[_Mention]:
    """Object noun phrases: a colour, a shape word, or a colour followed by a shape word / "one"."""
    out: list[_Mention] = []
    i = 0
    while i < len(tokens):
        colour = _WORD_TO_COLOUR.get(tokens[i])
        shape = _WORD_TO_SHAPE.get(tokens[i])
        if colour is None and shape is None:
            i += 1
            continue
        start = i
        if colour is not None and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            if nxt in _WORD_TO_SHAPE:
                shape, i = _WORD_TO_SHAPE[nxt], i + 1
            elif nxt == "one":
                i += 1
        det = start - 1 if start > 0 and tokens[start - 1] in ("the", "a") else start
        is_dest = det > 0 and tokens[det - 1] in _DEST_PREPS
        out.append(_Mention(ObjectRef(colour, shape), start, is_dest, i + 1))
        i += 1
    return out


def _target_mention(mentions: list[_Mention]) -> _Mention:
    """The mention naming the object to act on: the first one not after a destination preposition
    (the first mention when all are)."""
    return next((m for m in mentions if not m.is_destination), mentions[0])


def _unknown_modifier(tokens: list[str]) -> str | None:
    """A word outside the grammar's vocabulary right before a shape word ("the purple cube"):
    ignoring it would silently ground the instruction on the wrong object."""
    known = _vocabulary()
    for i, tok in enumerate(tokens):
        if i > 0 and tok in _WORD_TO_SHAPE and tokens[i - 1] not in known:
            return tokens[i - 1]
    return None


@functools.cache
def _vocabulary() -> frozenset[str]:
    return frozenset(template_words("train") | {"a", "an", "this", "that", "other", "please", "one"})


def _direction(text: str) -> str | None:
    found = []
    for name, phrases in DIRECTION_PHRASES.items():
        for phrase in phrases:
            m = re.search(rf"\b{phrase}\b", text)
            if m:
                found.append((len(phrase), name))
    return max(found)[1] if found else None


def parse_instruction(text: str) -> ParseResult:
    """Map typed text to a :class:`Goal`, or say why it cannot.

    The parser is keyword based, so it covers every grammar template (tested) and reasonable
    free text ("please lift the red block") while refusing text it cannot ground.
    """
    low = " ".join(tokenize(text))
    tokens = low.split()
    if not tokens:
        return ParseResult(None, "the instruction is empty")
    mentions = _mentions(tokens)
    unknown = _unknown_modifier(tokens)
    if unknown:
        return ParseResult(None, f"unknown colour or word '{unknown}' (colours: {', '.join(COLOURS)})")
    receptacles = [_WORD_TO_RECEPTACLE[t] for t in tokens if t in _WORD_TO_RECEPTACLE]
    words = set(tokens)
    if not mentions:
        return ParseResult(None, "no object named (say a colour and/or a shape, e.g. 'the red cube')")
    objects = [m for m in mentions if not m.is_destination] or mentions[:1]
    target = _target_mention(mentions).ref
    if receptacles:
        if len(set(receptacles)) > 1:
            return ParseResult(None, "more than one receptacle named")
        return ParseResult(Goal("place", target, destination=receptacles[0]))
    if len(mentions) >= 2:
        dests = [m for m in mentions if m.is_destination]
        if not dests or len(objects) != 1:
            return ParseResult(None, "two objects named but unclear which goes on which")
        return ParseResult(Goal("stack", target, destination=dests[0].ref))
    if words & _PUSH_VERBS:
        direction = _direction(low)
        if direction is None:
            return ParseResult(None, "push in which direction? (left, right, forward or backward)")
        return ParseResult(Goal("push", target, direction=direction))
    if words & _PICK_VERBS:
        return ParseResult(Goal("pick", target))
    if words & _REACH_VERBS:
        return ParseResult(Goal("reach", target))
    if words & _STACK_WORDS:
        return ParseResult(None, "stack it on what? (name a second object)")
    return ParseResult(None, "no known action verb (pick up, push, put, stack, touch, ...)")


def word_roles(text: str) -> list[tuple[str, int]] | None:
    """Each word of ``tokenize(text)`` with its role (an index into ``WORD_ROLES``: 0 other, 1 names
    the target, 2 names the destination: the stacking base or the receptacle), or None when the
    text does not parse. The collector's templates always parse, so every scripted frame is
    labelled; the labels teach the model *which* named object moves, which it otherwise has to
    infer from word order through the action loss alone."""
    parsed = parse_instruction(text)
    if not parsed.ok:
        return None
    tokens = tokenize(text)
    roles = [0] * len(tokens)
    mentions = _mentions(tokens)
    target = _target_mention(mentions)
    for m in mentions:
        if m is target or (parsed.goal.family == "stack" and m.is_destination):
            roles[m.start:m.end] = [1 if m is target else 2] * (m.end - m.start)
    if parsed.goal.family == "place":
        roles = [2 if tok in _WORD_TO_RECEPTACLE else r for tok, r in zip(tokens, roles)]
    return list(zip(tokens, roles))


def resolve_goal(goal: Goal, scene: sc.SceneSpec) -> tuple[ResolvedGoal | None, str]:
    """Bind a goal to the scene's objects; fails when a description matches none or several."""

    def one(ref: ObjectRef, role: str) -> tuple[int | None, str]:
        hits = scene.find(ref.colour, ref.shape)
        if len(hits) == 1:
            return hits[0], ""
        what = ref.text().replace(" one", "") if ref.shape is None else ref.text()
        if not hits:
            return None, f"there is no {what} in the scene"
        return None, f"'{what}' matches {len(hits)} objects; name the {role} by colour and shape"

    target, why = one(goal.target, "target")
    if target is None:
        return None, why
    if goal.family == "place":
        dest = scene.receptacle(goal.destination)
        if dest is None:
            return None, f"there is no {goal.destination} in the scene"
        return ResolvedGoal(goal, target, dest), ""
    if goal.family == "stack":
        dest, why = one(goal.destination, "base")
        if dest is None:
            return None, why
        if dest == target:
            return None, "cannot stack an object on itself"
        if scene.objects[dest].shape not in FLAT_TOPPED_SHAPES:
            return None, f"cannot stack on a {scene.objects[dest].shape}: only cubes and cylinders have flat tops"
        return ResolvedGoal(goal, target, dest), ""
    return ResolvedGoal(goal, target), ""



def instruction_corpus(split: str = "train") -> list[str]:
    """Every phrasing of a split with every synonym, over a representative set of goals.

    The tokenizer is trained on this; it covers the whole vocabulary the grammar can produce.
    """
    from itertools import product

    out: list[str] = []
    refs = [ObjectRef(c, s) for c in COLOURS for s in SHAPES]
    dest_options: list[ObjectRef | str | None] = [*RECEPTACLES, ObjectRef("red", "cube")]
    for fam in TASK_FAMILIES.values():
        for template, ref, dest, direction in product(fam.phrasings(split), refs, dest_options, DIRECTIONS):
            goal = Goal(fam.name, ref, dest, direction)
            slots = {"obj": SHAPE_WORDS[ref.shape], "dest": (), "prep": (), "dir": DIRECTION_PHRASES[direction]}
            if isinstance(dest, str):
                slots["dest"], slots["prep"] = RECEPTACLE_WORDS[dest], RECEPTACLE_PREPS[dest]
            elif dest is not None:
                slots["dest"] = SHAPE_WORDS[dest.shape]
            keys = [k for k in slots if "{" + k + "}" in template]
            if any(not slots[k] for k in keys):
                continue
            for words in product(*(slots[k] for k in keys)):
                values = dict(zip(keys, words, strict=True))
                values["obj"] = f"{ref.colour} {values['obj']}"
                if isinstance(goal.destination, ObjectRef) and "dest" in values:
                    values["dest"] = f"{dest.colour} {values['dest']}"
                out.append(template.format(**values))
    return sorted(set(out))
