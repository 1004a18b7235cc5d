"""DVC caching is exact: each kind of change re-runs exactly the stages downstream of it.

One micro copy of the project (tests/dvc_project.py) is built and reproduced once for the module;
each test starts from an up-to-date pipeline, changes one thing, reproduces, and checks which
stages ran (and leaves the pipeline up to date again). The last tests run real DVC experiments:
one in the workspace (`dvc exp show` columns), and a queued grid through `fewsam grid --run`,
whose experiments run in temporary copies and find the dataset and weights outside the repo.

`score` depends on `infer`'s label maps, not on the model: after a retraining it runs when the
label maps changed and is skipped when they came out the same (two training steps of a micro
model may flip no voxel), so the tests below expect it exactly when DVC's hash of
`reports/predictions` changed.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from dvc_project import STAGES, make_project, repro, set_params, sh, stages_run

pytestmark = pytest.mark.slow


def predictions_hash(project: Path) -> str:
    """DVC's hash of `reports/predictions`, from dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["infer"]["outs"] if o["path"] == "reports/predictions"]
    return str(out["md5"])


def evaluation(project: Path, before: str) -> set[str]:
    """infer, and score when infer's label maps differ from those hashed as `before`."""
    return {"infer"} | ({"score"} if predictions_hash(project) != before else set())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("dvc"))
    assert repro(root) == set(STAGES)
    # As a user would: commit dvc.lock and the small uncached outputs. Queued experiments start
    # from the last commit plus changes to tracked files; untracked files are not copied.
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "reproduce")
    return root


def test_the_copy_runs_its_own_code(project: Path) -> None:
    done = sh(project, "python", "-c", "import synth, train, evaluate; print(evaluate.__file__)")
    assert Path(done.stdout.strip()).is_relative_to(project)


def test_nothing_changed_runs_no_stage(project: Path) -> None:
    assert json.loads(sh(project, "dvc", "status", "--json").stdout) == {}
    assert repro(project) == set()


def test_overlay_params_rerun_inference_only(project: Path) -> None:
    # Same label maps (DVC's hash of reports/predictions is unchanged): nothing to re-score.
    set_params(project, **{"evaluate.overlays_per_case": 2})
    assert repro(project) == {"infer"}


def test_protocol_change_rescores_only(project: Path) -> None:
    before = json.loads((project / "reports" / "metrics.json").read_text())
    set_params(project, **{"evaluate.protocol": "strict"})
    assert repro(project) == {"score"}
    after = json.loads((project / "reports" / "metrics.json").read_text())
    assert (before["protocol"], after["protocol"]) == ("transunet", "strict")
    assert after["hd95_unit"] == "mm"


def test_refiner_adds_refined_methods_without_retraining(project: Path) -> None:
    set_params(project, **{"evaluate.refine": "base", "evaluate.refine_min_score": -1e9})
    assert repro(project) == {"infer", "score"}
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    for method in ("prompt_free_refined", "unet_refined"):
        assert (project / "reports" / "predictions" / method).is_dir()
        assert metrics[f"{method}_dsc"] == metrics["methods"][method]["dice"]
    set_params(project, **{"evaluate.refine": "none", "evaluate.refine_min_score": 0.0})
    repro(project)  # infer's earlier outputs may come back from DVC's run cache
    assert not (project / "reports" / "predictions" / "prompt_free_refined").exists()


def test_train_params_rerun_training_and_evaluation(project: Path) -> None:
    before = predictions_hash(project)
    set_params(project, **{"train.lr": 0.002})
    assert repro(project) == {"train"} | evaluation(project, before)


def test_synth_params_rerun_synthesis_onward(project: Path) -> None:
    before = predictions_hash(project)
    set_params(project, **{"synth.paste_prob": 0.9})
    assert repro(project) == {"synthesize", "train", "baseline"} | evaluation(project, before)


def test_baseline_params_rerun_the_unet_and_evaluation_only(project: Path) -> None:
    before = predictions_hash(project)
    set_params(project, **{"baseline.lr": 0.002})
    assert repro(project) == {"baseline"} | evaluation(project, before)


def test_code_change_in_evaluate_reruns_evaluation_only(project: Path) -> None:
    module = project / "evaluate" / "metrics.py"
    module.write_text(module.read_text() + "# a comment changes the folder's hash\n")
    assert repro(project) == {"infer", "score"}


def test_exp_run_exemplars_reruns_extraction_onward_and_shows_columns(project: Path) -> None:
    before = predictions_hash(project)
    done = sh(project, "dvc", "exp", "run", "-n", "ex3", "-S", "exemplars=3")
    ran = stages_run(done.stdout)
    assert ran == {"extract", "synthesize", "train", "baseline"} | evaluation(project, before)
    table = sh(project, "dvc", "exp", "show", "--csv").stdout
    header = next(csv.reader(io.StringIO(table)))
    for column in ("exemplars", "synth.enabled", "model.arch", "lora.rank"):
        assert column in header, header
    # The headline metrics are the first metric columns, before the nested blocks.
    first = header.index("dsc")
    assert first < min(i for i, name in enumerate(header) if name.startswith("adapted."))
    assert header[first : first + 10] == [
        "dsc",
        "hd95",
        "dsc_prompt_free",
        "hd95_prompt_free",
        "unet_dsc",
        "unet_hd95",
        "zero_shot_dsc",
        "zero_shot_hd95",
        "zero_shot_box_dsc",
        "zero_shot_box_hd95",
    ]
    rows = list(csv.DictReader(io.StringIO(table)))
    (ex3,) = [r for r in rows if r["Experiment"] == "ex3"]
    assert ex3["exemplars"] == "3" and ex3["synth.enabled"] == "True"
    assert 0.0 <= float(ex3["dsc"]) <= 1.0 and 0.0 <= float(ex3["zero_shot_dsc"]) <= 1.0
    assert repro(project) == set()


def test_grid_queue_runs_with_outside_paths_and_report_collects_it(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert Path(params["dataset"]["root"]).is_absolute()
    assert not Path(params["dataset"]["root"]).is_relative_to(project)
    assert not Path(params["model"]["checkpoint"]).is_relative_to(project)
    # The workspace's own exemplar count: that grid point is restored from DVC's run cache.
    n = params["exemplars"]
    sh(project, "fewsam", "grid", "--exemplars", str(n), "--prefix", "g", "--run")
    sh(project, "fewsam", "report", "--out", "paper")
    # Only finished experiments reach the table, each grid point with its method and count.
    table = (project / "paper" / "paper_table.md").read_text()
    assert f"| Synapse | fewsam | {n} | " in table and f"| g-{n}-synth |" in table
    assert f"| Synapse | fewsam w/o synthesis | {n} | " in table and f"| g-{n}-nosynth |" in table
    assert f"| Synapse | U-Net on the same data | {n} | " in table
    assert f"| Synapse | U-Net w/o synthesis | {n} | " in table
    assert "| Synapse | fewsam w/o synthesis | all | " in table and "| g-all |" in table
    assert "| Synapse | zero-shot SAM | – |" in table
    assert "| Synapse | zero-shot SAM (box) | – |" in table
    assert (project / "paper" / "dsc_vs_exemplars.png").read_bytes()[:4] == b"\x89PNG"
