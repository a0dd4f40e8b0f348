"""Scene contents: objects, receptacles, the table, and reproducible layout sampling.

A :class:`SceneSpec` is plain data (what is where); :func:`build_scene` turns it into PyBullet
bodies on a given client. Keeping the two apart lets the env snapshot, compare and rebuild
scenes exactly, and lets tasks reason about a layout without a physics client.

Geometry is primitive shapes only: the CPU renderer's cost grows with triangle count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla_demo.constants import COLOURS, RECEPTACLES, SHAPES, UNNAMED_COLOURS

OBJECT_HALF = 0.025  # half-size of every object (cube half-edge, cylinder/sphere radius), m
OBJECT_MASS = 0.08  # kg: light enough for the Panda fingers' 20 N limit, heavy enough to sit still
TABLE_COLOUR = (0.78, 0.72, 0.62, 1.0)
OBJECT_COLOURS = {**COLOURS, **UNNAMED_COLOURS}  # what an object may wear; instructions name COLOURS only
TABLE_HALF = (0.65, 0.65, 0.02)
TABLE_CENTRE = (0.35, 0.0, -0.02)  # top surface at z = 0

# Area where objects and receptacles are spawned (inside the reachable, visible part of the table).
SPAWN_X = (0.38, 0.66)
SPAWN_Y = (-0.22, 0.22)
MIN_OBJECT_GAP = 0.085  # centre-to-centre distance between two objects, m

# Receptacles: footprint radius used for spacing, and the height an object rests at inside.
TRAY_INNER_HALF = 0.065
TRAY_WALL = (0.008, 0.028)  # thickness, height
TRAY_BASE = 0.006
PLATE_RADIUS = 0.065
PLATE_HEIGHT = 0.008
RECEPTACLE_COLOURS = {"tray": (0.45, 0.45, 0.50, 1.0), "plate": (0.96, 0.96, 0.96, 1.0)}
RECEPTACLE_RADIUS = {"tray": TRAY_INNER_HALF + TRAY_WALL[0], "plate": PLATE_RADIUS}
RECEPTACLE_FLOOR = {"tray": TRAY_BASE, "plate": PLATE_HEIGHT}  # z an object rests on


@dataclass(frozen=True)
class ObjectSpec:
    """One graspable object: ``colour`` from OBJECT_COLOURS, ``shape`` from SHAPES, pose on the table."""

    colour: str
    shape: str
    x: float
    y: float
    yaw: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def combo(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass(frozen=True)
class ReceptacleSpec:
    """A tray or a plate lying on the table."""

    kind: str
    x: float
    y: float

    @property
    def name(self) -> str:
        return self.kind


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    receptacles: tuple[ReceptacleSpec, ...] = ()

    def find(self, colour: str | None, shape: str | None) -> list[int]:
        """Indices of objects matching a (possibly partial) colour/shape description."""
        return [
            i
            for i, o in enumerate(self.objects)
            if (colour is None or o.colour == colour) and (shape is None or o.shape == shape)
        ]

    def receptacle(self, kind: str) -> int | None:
        for i, r in enumerate(self.receptacles):
            if r.kind == kind:
                return i
        return None


def sample_layout(
    rng: np.random.Generator,
    combos: list[tuple[str, str]],
    receptacles: list[str],
    reserved: dict[int, tuple[float, float]] | None = None,
    keepout: list[tuple[float, float]] | None = None,
    max_tries: int = 200,
) -> SceneSpec:
    """Place the given objects and receptacles at random, non-overlapping spots.

    Args:
        rng: the episode's generator (the only source of randomness, for reproducibility).
        combos: (colour, shape) of each object, in order.
        receptacles: receptacle kinds to place.
        reserved: optional fixed (x, y) for some object indices (tasks that need room, such as
            a push, choose their target's spot first).
        keepout: (x, y) points other items keep clear of (a push's path).
        max_tries: rejection-sampling attempts per item before giving up.

    Raises:
        RuntimeError: the items do not fit (never with the default spawn area and <= 5 objects).
    """
    reserved = reserved or {}
    placed: list[tuple[float, float, float]] = []  # x, y, clearance radius
    for xy in reserved.values():
        placed.append((xy[0], xy[1], OBJECT_HALF))
    for xy in keepout or []:
        placed.append((xy[0], xy[1], OBJECT_HALF))

    def free_spot(radius: float) -> tuple[float, float]:
        for _ in range(max_tries):
            x = rng.uniform(*SPAWN_X)
            y = rng.uniform(*SPAWN_Y)
            if all(math.hypot(x - px, y - py) >= max(MIN_OBJECT_GAP, radius + pr + 0.03) for px, py, pr in placed):
                placed.append((x, y, radius))
                return x, y
        raise RuntimeError("could not fit the scene's objects on the table; use fewer objects")

    recs = []
    for kind in receptacles:
        x, y = free_spot(RECEPTACLE_RADIUS[kind])
        recs.append(ReceptacleSpec(kind, float(x), float(y)))
    objects = []
    for i, (colour, shape) in enumerate(combos):
        x, y = reserved[i] if i in reserved else free_spot(OBJECT_HALF)
        yaw = float(rng.uniform(-math.pi / 4, math.pi / 4)) if shape == "cube" else 0.0
        objects.append(ObjectSpec(colour, shape, float(x), float(y), yaw))
    return SceneSpec(tuple(objects), tuple(recs))


def validate_scene(spec: SceneSpec) -> None:
    """Raise ValueError when a scene names unknown colours, shapes or receptacles."""
    for o in spec.objects:
        if o.colour not in OBJECT_COLOURS or o.shape not in SHAPES:
            raise ValueError(f"unknown object {o.name!r}: colours are {list(OBJECT_COLOURS)}, shapes {list(SHAPES)}")
    for r in spec.receptacles:
        if r.kind not in RECEPTACLES:
            raise ValueError(f"unknown receptacle {r.kind!r}: choose from {list(RECEPTACLES)}")


# ----------------------------------------------------------------------------- building bodies


def build_table(client) -> int:
    import pybullet as p

    col = client.createCollisionShape(p.GEOM_BOX, halfExtents=TABLE_HALF)
    vis = client.createVisualShape(p.GEOM_BOX, halfExtents=TABLE_HALF, rgbaColor=TABLE_COLOUR)
    return client.createMultiBody(0, col, vis, basePosition=TABLE_CENTRE)


def _object_shapes(client, shape: str, rgba) -> tuple[int, int]:
    import pybullet as p

    h = OBJECT_HALF
    if shape == "cube":
        kw = dict(shapeType=p.GEOM_BOX, halfExtents=[h, h, h])
        return client.createCollisionShape(**kw), client.createVisualShape(**kw, rgbaColor=rgba)
    if shape == "cylinder":
        col = client.createCollisionShape(p.GEOM_CYLINDER, radius=h, height=2 * h)
        return col, client.createVisualShape(p.GEOM_CYLINDER, radius=h, length=2 * h, rgbaColor=rgba)
    col = client.createCollisionShape(p.GEOM_SPHERE, radius=h)
    return col, client.createVisualShape(p.GEOM_SPHERE, radius=h, rgbaColor=rgba)


def build_object(client, spec: ObjectSpec) -> int:
    col, vis = _object_shapes(client, spec.shape, OBJECT_COLOURS[spec.colour])
    quat = client.getQuaternionFromEuler([0, 0, spec.yaw])
    body = client.createMultiBody(OBJECT_MASS, col, vis, basePosition=[spec.x, spec.y, OBJECT_HALF], baseOrientation=quat)
    # Rolling/spinning friction keep spheres and cylinders from drifting off after a nudge.
    client.changeDynamics(body, -1, lateralFriction=1.0, rollingFriction=0.001, spinningFriction=0.001)
    return body


def build_receptacle(client, spec: ReceptacleSpec) -> int:
    """A static tray (floor + four low walls, one compound body) or a plate (flat disc)."""
    import pybullet as p

    rgba = RECEPTACLE_COLOURS[spec.kind]
    if spec.kind == "plate":
        col = client.createCollisionShape(p.GEOM_CYLINDER, radius=PLATE_RADIUS, height=PLATE_HEIGHT)
        vis = client.createVisualShape(p.GEOM_CYLINDER, radius=PLATE_RADIUS, length=PLATE_HEIGHT, rgbaColor=rgba)
        return client.createMultiBody(0, col, vis, basePosition=[spec.x, spec.y, PLATE_HEIGHT / 2])
    inner, (t, wall_h) = TRAY_INNER_HALF, TRAY_WALL
    outer = inner + t
    parts = [([outer, outer, TRAY_BASE / 2], [0, 0, TRAY_BASE / 2])]
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        half = [t / 2, outer, wall_h / 2] if sx else [outer, t / 2, wall_h / 2]
        parts.append((half, [sx * (inner + t / 2), sy * (inner + t / 2), wall_h / 2]))
    halves = [h for h, _ in parts]
    offsets = [o for _, o in parts]
    col = client.createCollisionShapeArray([p.GEOM_BOX] * len(parts), halfExtents=halves, collisionFramePositions=offsets)
    vis = client.createVisualShapeArray(
        [p.GEOM_BOX] * len(parts), halfExtents=halves, visualFramePositions=offsets, rgbaColors=[rgba] * len(parts)
    )
    return client.createMultiBody(0, col, vis, basePosition=[spec.x, spec.y, 0.0])
