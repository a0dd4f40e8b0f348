"""Instruction grammar, splits, parser and scene sampling (no physics needed)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from vla_demo.constants import (COLOURS, DIRECTIONS, FAMILIES, FLAT_TOPPED_SHAPES, HELDOUT_COMBOS, RECEPTACLES, SHAPES,
                                UNNAMED_COLOURS)
from vla_demo.sim import scene as sc
from vla_demo.sim import tasks
from vla_demo.sim.tasks import Goal, ObjectRef


def all_goals(family: str):
    """Every goal a family can ask for, over all colours, shapes, destinations and directions."""
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for colour, shape in combos:
        target = ObjectRef(colour, shape)
        if family == "place":
            for r in RECEPTACLES:
                yield Goal(family, target, destination=r)
        elif family == "stack":
            if shape not in FLAT_TOPPED_SHAPES:
                continue
            for c2, s2 in combos:
                if s2 in FLAT_TOPPED_SHAPES and (c2, s2) != (colour, shape):
                    yield Goal(family, target, destination=ObjectRef(c2, s2))
        elif family == "push":
            for d in DIRECTIONS:
                yield Goal(family, target, direction=d)
        else:
            yield Goal(family, target)


def expansions(template: str, goal: Goal):
    """Every rendering of a template for a goal, over all synonyms of every slot."""
    shape_words = tasks.SHAPE_WORDS
    options = {"obj": [f"{goal.target.colour} {w}" for w in shape_words[goal.target.shape]]}
    if isinstance(goal.destination, ObjectRef):
        options["dest"] = [f"{goal.destination.colour} {w}" for w in shape_words[goal.destination.shape]]
    elif isinstance(goal.destination, str):
        options["dest"] = list(tasks.RECEPTACLE_WORDS[goal.destination])
        options["prep"] = list(tasks.RECEPTACLE_PREPS[goal.destination])
    if goal.direction:
        options["dir"] = list(tasks.DIRECTION_PHRASES[goal.direction])
    keys = [k for k in options if "{" + k + "}" in template]
    for values in itertools.product(*(options[k] for k in keys)):
        yield template.format(**dict(zip(keys, values, strict=True)))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_parser_round_trips_every_template_and_synonym(family, split):
    fam = tasks.get_family(family)
    n = 0
    for template in fam.phrasings(split):
        for goal in all_goals(family):
            for text in expansions(template, goal):
                parsed = tasks.parse_instruction(text)
                assert parsed.goal == goal, f"{text!r} parsed as {parsed}"
                n += 1
    assert n > 50


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_word_roles_mark_the_target_and_destination_words_of_every_template(family, split):
    """Role labels, whatever the word order: the target's colour and shape word are 1, the stacking
    base's (or the receptacle's word) 2, everything else 0."""
    fam = tasks.get_family(family)
    for template in fam.phrasings(split):
        for goal in list(all_goals(family))[::7]:
            for text in expansions(template, goal):
                labelled = tasks.word_roles(text)
                assert [w for w, _ in labelled] == tasks.tokenize(text)
                named = {1: [w for w, r in labelled if r == 1], 2: [w for w, r in labelled if r == 2]}
                assert named[1][0] == goal.target.colour and named[1][1] in tasks.SHAPE_WORDS[goal.target.shape], text
                assert len(named[1]) == 2, text
                if family == "stack":
                    assert named[2][0] == goal.destination.colour and len(named[2]) == 2, text
                elif family == "place":
                    assert named[2] and set(named[2]) <= set(tasks.RECEPTACLE_WORDS[goal.destination]), text
                else:
                    assert not named[2], text


def test_word_roles_of_unparseable_text_is_none():
    assert tasks.word_roles("") is None
    assert tasks.word_roles("pick up the purple cube") is None
    assert tasks.word_roles("dance") is None
    assert tasks.word_roles("please lift the RED block!") == [
        ("please", 0), ("lift", 0), ("the", 0), ("red", 1), ("block", 1)]


def test_phrasing_splits_are_disjoint_and_heldout_uses_training_words():
    for fam in tasks.TASK_FAMILIES.values():
        train, held = set(fam.phrasings("train")), set(fam.phrasings("heldout"))
        assert train and held and not train & held, fam.name
        assert fam.phrasings("heldout-combos") == fam.phrasings("train")
    assert tasks.template_words("heldout") <= tasks.template_words("train")


def test_heldout_renderings_never_equal_training_renderings():
    for family in FAMILIES:
        fam = tasks.get_family(family)
        for goal in itertools.islice(all_goals(family), 6):
            train = {t for tpl in fam.phrasings("train") for t in expansions(tpl, goal)}
            held = {t for tpl in fam.phrasings("heldout") for t in expansions(tpl, goal)}
            assert not train & held, family


def test_target_combo_splits_are_disjoint_and_cover_every_colour_and_shape():
    for family in FAMILIES:
        train = set(tasks.target_combos("train", family))
        combos = set(tasks.target_combos("heldout-combos", family))
        assert train and combos and not train & combos
        assert combos <= HELDOUT_COMBOS
    train = set(tasks.target_combos("train", "pick"))
    assert {c for c, _ in train} == set(COLOURS) and {s for _, s in train} == set(SHAPES)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split", ["train", "heldout", "heldout-combos"])
def test_sampled_episodes_follow_their_split(family, split):
    fam = tasks.get_family(family)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene, goal, text = fam.sample(rng, split, n_objects=int(rng.integers(2, 6)))
        target = (goal.target.colour, goal.target.shape)
        assert (target in HELDOUT_COMBOS) == (split == "heldout-combos")
        if family == "stack":
            assert (goal.destination.colour, goal.destination.shape) not in HELDOUT_COMBOS
        assert tasks.parse_instruction(text).goal == goal
        rendered_from = "heldout" if split == "heldout" else "train"
        assert any(_matches(t, text) for t in fam.phrasings(rendered_from)), text
        resolved, why = tasks.resolve_goal(goal, scene)
        assert resolved is not None, why
        assert 2 <= len(scene.objects) <= 5
        assert len({o.combo for o in scene.objects}) == len(scene.objects)


def _matches(template: str, text: str) -> bool:
    pattern = re.escape(template)
    pattern = re.sub(r"\\\{\w+\\\}", ".+", pattern)
    return re.fullmatch(pattern, text) is not None


def test_two_candidates_adds_a_same_shape_rival():
    for seed in range(30):
        rng = np.random.default_rng(seed)
        scene, goal, _ = tasks.get_family("reach").sample(rng, "train", 2, two_candidates=True)
        same_shape = scene.find(None, goal.target.shape)
        assert len(same_shape) >= 2


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split", ["train", "heldout-combos"])
def test_shape_rival_adds_the_targets_colour_in_another_shape(family, split):
    fam = tasks.get_family(family)
    for seed in range(40):
        scene, goal, _ = fam.sample(np.random.default_rng(seed), split, 2, shape_rival=True)
        rivals = [i for i in scene.find(goal.target.colour, None) if scene.objects[i].shape != goal.target.shape]
        assert rivals, (family, seed, scene.objects)
        assert len({o.combo for o in scene.objects}) == len(scene.objects)  # still one object per name
        if split == "train":
            assert not {o.combo for o in scene.objects} & HELDOUT_COMBOS


@pytest.mark.parametrize("family", ["pick", "push", "place", "reach"])
def test_shape_only_names_the_target_by_its_shape_alone_beside_one_of_its_colour(family):
    fam = tasks.get_family(family)
    unnamed = 0
    for seed in range(40):
        scene, goal, text = fam.sample(np.random.default_rng(seed), "train", 2 + seed % 4, shape_only=True)
        assert goal.target.colour is None and not set(tasks.tokenize(text)) & set(COLOURS), text
        assert tasks.parse_instruction(text).goal == goal  # the parser reads it as sampled
        resolved, why = tasks.resolve_goal(goal, scene)
        assert resolved is not None, why
        target = scene.objects[resolved.target]
        assert scene.find(None, target.shape) == [resolved.target]  # the shape word names one object
        assert any(o.colour == target.colour and o.shape != target.shape for o in scene.objects)
        assert not {o.combo for o in scene.objects} & HELDOUT_COMBOS
        assert len({o.combo for o in scene.objects}) == len(scene.objects) == max(2, 2 + seed % 4)
        unnamed += target.colour in UNNAMED_COLOURS
    assert 5 < unnamed < 35  # targets wear named and unnamed colours


def test_shape_only_refuses_stack_and_other_scenes_keep_named_colours():
    with pytest.raises(ValueError, match="stack names two objects"):
        tasks.get_family("stack").sample(np.random.default_rng(0), "train", 3, shape_only=True)
    for seed in range(60):
        scene, _, _ = tasks.get_family(FAMILIES[seed % 5]).sample(np.random.default_rng(seed), "heldout-combos", 5)
        assert all(o.colour in COLOURS for o in scene.objects)
    for colour in UNNAMED_COLOURS:  # no instruction can name them
        assert not tasks.parse_instruction(f"pick up the {colour} cube").ok


def test_options_that_are_off_leave_the_scene_stream_unchanged():
    """Collections and evaluations made before ``shape_rival`` existed keep their scenes."""
    fam = tasks.get_family("stack")
    for seed in range(20):
        plain = fam.sample(np.random.default_rng(seed), "train", 4)
        off = fam.sample(np.random.default_rng(seed), "train", 4, two_candidates=False, shape_rival=False)
        assert plain == off
        rival = fam.sample(np.random.default_rng(seed), "train", 4, shape_rival=True)
        assert rival[1] == plain[1]  # the target is drawn first, before any rival


def test_sampled_objects_do_not_overlap():
    for seed in range(50):
        rng = np.random.default_rng(seed)
        family = FAMILIES[seed % len(FAMILIES)]
        scene, _, _ = tasks.get_family(family).sample(rng, "train", 5)
        xy = [(o.x, o.y) for o in scene.objects]
        for a, b in itertools.combinations(xy, 2):
            assert np.hypot(a[0] - b[0], a[1] - b[1]) >= sc.MIN_OBJECT_GAP - 1e-9


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("dance", "no object"),
        ("push the red cube", "direction"),
        ("stack the red cube", "on what"),
        ("the red cube", "verb"),
        ("put the red cube in the tray on the plate", "more than one receptacle"),
    ],
)
def test_parser_says_why_it_cannot_parse(text, why):
    parsed = tasks.parse_instruction(text)
    assert not parsed.ok and why in parsed.reason


def test_parser_accepts_free_text_and_partial_references():
    assert tasks.parse_instruction("Please LIFT the Red Block!").goal == Goal("pick", ObjectRef("red", "cube"))
    assert tasks.parse_instruction("touch the ball").goal == Goal("reach", ObjectRef(None, "sphere"))
    assert tasks.parse_instruction("grab the blue one").goal == Goal("pick", ObjectRef("blue", None))


def test_resolve_goal_grounds_partial_references_only_when_unique():
    scene = sc.SceneSpec((sc.ObjectSpec("red", "cube", 0.5, 0), sc.ObjectSpec("blue", "cube", 0.5, 0.1),
                          sc.ObjectSpec("red", "sphere", 0.6, 0)))
    ok, _ = tasks.resolve_goal(Goal("pick", ObjectRef(None, "sphere")), scene)
    assert ok is not None and ok.target == 2
    none, why = tasks.resolve_goal(Goal("pick", ObjectRef(None, "cube")), scene)
    assert none is None and "matches 2" in why
    none, why = tasks.resolve_goal(Goal("pick", ObjectRef("green", "cube")), scene)
    assert none is None and "no green cube" in why
    none, why = tasks.resolve_goal(Goal("stack", ObjectRef("red", "cube"), ObjectRef("red", "sphere")), scene)
    assert none is None and "flat tops" in why
    none, why = tasks.resolve_goal(Goal("place", ObjectRef("red", "cube"), destination="tray"), scene)
    assert none is None and "no tray" in why


def test_unknown_split_and_family_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown split"):
        tasks.target_combos("test", "pick")
    with pytest.raises(ValueError, match="unknown task family"):
        tasks.get_family("juggle")


def test_unknown_colour_is_refused_not_ignored():
    parsed = tasks.parse_instruction("pick up the purple cube")
    assert not parsed.ok and "purple" in parsed.reason


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("two_candidates", [False, True])
def test_heldout_combinations_stand_only_in_heldout_combo_scenes(family, two_candidates):
    fam = tasks.get_family(family)
    seen_in_combo_scenes = set()
    for seed in range(60):
        for split in ("train", "heldout", "heldout-combos"):
            scene, goal, _ = fam.sample(np.random.default_rng(seed), split, n_objects=5, two_candidates=two_candidates)
            combos = {(o.colour, o.shape) for o in scene.objects}
            if split == "heldout-combos":
                seen_in_combo_scenes |= combos & HELDOUT_COMBOS
            else:
                assert not combos & HELDOUT_COMBOS, (split, seed, combos)
    # heldout-combos scenes still hold other held-out combinations as distractors (they are unchanged).
    assert len(seen_in_combo_scenes) > 1
