import json

import pytest

from fedp2p.cli import main
from fedp2p.config import build_config
from fedp2p.experiment import run_experiment
from fedp2p.results import read_metrics


def tiny_config(tiny_images, tmp_path, **changes):
    values = {
        "dataset": str(tiny_images),
        "clients": 2,
        "rounds": 1,
        "alpha": 1.0,
        "min_shard": 10,
        "reference_size": 20,
        "eval_subset": 20,
        "batch_size": 16,
        "out_dir": str(tmp_path / "runs"),
        "threads": 1,
    }
    values.update(changes)
    return build_config(values)


def test_two_clients_one_round_end_to_end(tiny_images, tmp_path, capsys):
    config = tiny_config(tiny_images, tmp_path, algorithm="local,central", name="e2e")
    folder, summaries = run_experiment(config)
    assert [s["algorithm"] for s in summaries] == ["local", "central"]
    for algo in ("local", "central"):
        sub = folder / algo
        for name in (
            "config.json",
            "metrics.jsonl",
            "summary.json",
            "shards.json",
            "shards.png",
            "accuracy.png",
        ):
            assert (sub / name).is_file(), name
        assert json.loads((sub / "config.json").read_text())["algorithm"] == algo
        records = read_metrics(sub / "metrics.jsonl")
        assert sorted(r.client for r in records) == [0, 1]
        assert all(r.global_size == 40 for r in records)  # the final round uses the full test set
        summary = json.loads((sub / "summary.json").read_text())
        for key in (
            "algorithm",
            "dataset",
            "peers",
            "rounds",
            "wall_seconds",
            "global_acc",
            "local_acc",
            "per_arch",
        ):
            assert key in summary
        assert (
            0.0
            <= summary["global_acc"]["min"]
            <= summary["global_acc"]["mean"]
            <= summary["global_acc"]["max"]
            <= 1.0
        )
    assert (folder / "comparison.png").is_file()
    assert "central" in (folder / "results.md").read_text()
    assert "global mean" in capsys.readouterr().err


def test_same_seed_same_results(tiny_images, tmp_path):
    a = run_experiment(tiny_config(tiny_images, tmp_path, name="a", rounds=2))[1][0]
    b = run_experiment(tiny_config(tiny_images, tmp_path, name="b", rounds=2))[1][0]
    assert a["global_acc"] == b["global_acc"]
    assert a["local_acc"] == b["local_acc"]


def test_cli_turns_bad_input_into_one_sentence(capsys):
    assert main(["run", "--set", "roudns=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedp2p: error:") and "rounds" in err and "Traceback" not in err


def test_cli_reports_missing_data_without_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fedp2p.learn.sources.fetch", _offline)
    code = main(
        [
            "run",
            "--set",
            "dataset=fashion-mnist",
            "--data-dir",
            str(tmp_path),
            "--set",
            f"out_dir={tmp_path}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "fashion-mnist" in err.lower() and "Traceback" not in err


def _offline(url, dest, timeout=0.0):
    raise OSError("no network in this test")


@pytest.mark.parametrize("argv", [["--version"], ["run", "--help"]])
def test_cli_help_and_version(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


def test_keygen_writes_a_private_secret_and_never_overwrites(tmp_path, capsys):
    from fedp2p.wire.secret import load_secret

    path = tmp_path / "net.secret"
    assert main(["keygen", str(path)]) == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(load_secret(str(path))) == 32
    assert main(["keygen", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_peer_command_refuses_bad_addresses_in_one_sentence(capsys):
    assert main(["peer", "--id", "0", "--bootstrap", "nohost"]) == 2
    err = capsys.readouterr().err
    assert "HOST:PORT" in err and "Traceback" not in err
