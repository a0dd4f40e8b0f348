"""Names shared by the simulator, datasets, policies and the UI.

Feature keys follow LeRobot's dotted naming so that a recorded dataset, a training batch and an
environment observation use the same strings. Import these instead of writing the literals.
"""

from __future__ import annotations

# Feature keys (observation dict, dataset columns, training batches).
OBS_PREFIX = "observation"
OBS_IMAGE_FRONT = "observation.images.front"
OBS_IMAGE_WRIST = "observation.images.wrist"
OBS_STATE = "observation.state"
TASK = "task"
ACTION = "action"
EXECUTED_ACTION = "executed_action"
INTERVENTION = "intervention"
ACTION_IS_PAD = "action_is_pad"
# Scripted datasets only: (6,) target centre and destination, m (labels for the auxiliary goal
# head, never a policy input; NaN in a batch where a dataset has no such column).
GOAL_POSITIONS = "goal_positions"
GOAL_NAMES: tuple[str, ...] = ("target_x", "target_y", "target_z", "dest_x", "dest_y", "dest_z")
# What each word of an instruction does (``tasks.word_roles``; labels for the auxiliary role
# supervision): index 0 = neither, 1 = names the object to act on, 2 = names where it goes.
WORD_ROLES: tuple[str, ...] = ("other", "target", "destination")
# Scripted datasets only: what every object in the scene is and where each camera sees it (labels
# for the auxiliary object head, never a policy input). One row of OBJECT_LABEL_FIELDS per object
# slot, flattened to (MAX_OBJECTS * 7,): colour and shape indices (into COLOURS and SHAPES; -1 in
# an empty slot and for an object in an unnamed colour, which the object head has no class for), the object centre in each image as (u, v) in [-1, 1] (u to the right, v down), and
# whether the centre is inside the wrist image (1.0) or not (0.0; its u, v are then 0).
OBJECT_LABELS = "object_labels"
OBJECT_LABEL_FIELDS: tuple[str, ...] = ("colour", "shape", "front_u", "front_v", "wrist_u", "wrist_v", "wrist_visible")
MAX_OBJECTS = 5

# Gymnasium id of the tabletop env (registered by ``import vla_demo.sim``).
ENV_ID = "VLATabletop-v0"

# Task families (ARCHITECTURE section 4). A *task* in a dataset is the instruction string.
FAMILIES: tuple[str, ...] = ("pick", "push", "place", "stack", "reach")

# Instruction splits: which phrasings and which target colour-shape combinations are sampled.
SPLITS: tuple[str, ...] = ("train", "heldout", "heldout-combos")

# Object vocabulary. Colours are RGBA in [0, 1]; order is part of the contract (stable ids).
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.86, 0.12, 0.12, 1.0),
    "green": (0.15, 0.68, 0.22, 1.0),
    "blue": (0.14, 0.32, 0.88, 1.0),
    "yellow": (0.95, 0.82, 0.10, 1.0),
}
# Colours no instruction names (the parser refuses them as unknown words). Objects wear them only in
# shape-only scenes (``TaskFamily.sample(shape_only=True)``, ``collect --shape-only``): the target
# is named by its shape alone, so what finds it is shape seen in colours the named ones never pair
# with. Their hues sit far from every named colour (purple 56 degrees from blue, cyan 47 from green
# and 50 from blue), so no unnamed object passes for a named one, held-out combinations included.
UNNAMED_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "purple": (0.62, 0.20, 0.82, 1.0),
    "cyan": (0.10, 0.80, 0.74, 1.0),
}
SHAPES: tuple[str, ...] = ("cube", "cylinder", "sphere")
FLAT_TOPPED_SHAPES: tuple[str, ...] = ("cube", "cylinder")
RECEPTACLES: tuple[str, ...] = ("tray", "plate")

# Colour-shape combinations that are never the target of a training episode (the
# ``heldout-combos`` split). Each colour and each shape still appears as a target in training.
HELDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {("yellow", "cube"), ("blue", "cylinder"), ("green", "sphere")}
)

# Push directions, named as the operator sees them in the front camera (which faces the robot):
# image-left is world -y, image-right is world +y, "forward" is away from the robot (+x).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (0.0, -1.0),
    "right": (0.0, 1.0),
    "forward": (1.0, 0.0),
    "backward": (-1.0, 0.0),
}

# State vector layout (7,): position (m, world), orientation relative to gripper-down home (rad),
# gripper opening (m, distance between the fingers).
STATE_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw", "gripper_m")
# Action vector layout (7,): per-control-step deltas (m, rad) and an absolute gripper command.
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
STATE_DIM = len(STATE_NAMES)
ACTION_DIM = len(ACTION_NAMES)

# Gripper command convention (Bridge / OpenVLA): 1 = open, 0 = closed.
GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = 0.0

# Longest instruction the env accepts (gymnasium ``Text`` space max_length); longer text is
# truncated with a warning.
MAX_INSTRUCTION_CHARS = 256

# Policy server (``python -m vla_demo serve``, ``RemotePolicy``): the environment variable holding
# the bearer token, and the one action normalisation a server offers (the name OpenVLA clients
# may pass as ``unnorm_key``; the checkpoint's own statistics).
SERVE_TOKEN_ENV = "VLA_DEMO_SERVE_TOKEN"
SERVE_UNNORM_KEY = "vla_demo"
