import pytest

from fedp2p.config import RunConfig, build_config, load_config, parse_overrides, preset_names
from fedp2p.errors import UserError


def test_defaults_match_the_mission():
    c = RunConfig()
    assert (c.dataset, c.clients, c.alpha, c.seed) == ("mnist", 30, 0.1, 0)
    assert [c.arch_of(i) for i in range(30)].count("cnn7") == 10


def test_overrides_are_typed_against_the_defaults():
    c = build_config(
        overrides=parse_overrides(
            ["rounds=5", "alpha=0.5", "archs=cnn3,cnn7", "algorithm=local,central"]
        )
    )
    assert c.rounds == 5 and isinstance(c.rounds, int)
    assert c.alpha == 0.5
    assert c.archs == ("cnn3", "cnn7")
    assert c.algorithms == ("local", "central")


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("roudns=5", "did you mean 'rounds'"),
        ("rounds=five", "takes a int"),
        ("rounds=2.5", "takes a int"),
        ("alpha=abc", "takes a float"),
        ("algorithm=magic", "unknown"),
        ("archs=cnn9", "unknown"),
        ("clients=0", "at least 1"),
        ("norhyme", "key=value"),
    ],
)
def test_bad_overrides_say_what_is_wrong(pair, message):
    with pytest.raises(UserError, match=message):
        build_config(overrides=parse_overrides([pair]))


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('dataset = "fashion-mnist"\nrounds = 7\n[train]\nlr = 0.05\n')
    c = load_config(path, overrides={"rounds": "2"})
    assert (c.dataset, c.rounds, c.lr) == ("fashion-mnist", 2, 0.05)


def test_missing_or_broken_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)


def test_presets_load():
    assert "quick" in preset_names()
    for name in preset_names():
        load_config(preset=name)
    with pytest.raises(UserError, match="preset"):
        load_config(preset="nope")


def test_to_dict_round_trips():
    c = build_config(overrides={"rounds": "3", "archs": "cnn5"})
    assert build_config(c.to_dict()) == c
