"""The Copier template (copier.yml): twins that cannot drift from their files, copy and update.

This repository is the template and stays a working project. A file that holds an answer (project
name, W&B project, author) has a twin ``X.jinja``, made from ``X`` by the replacements in
``twin_rules``; Copier renders the twin to ``X`` in a new project. After changing such a file,
remake the twins (the tests below fail until then):

    python tests/test_template.py

Template machinery only: copier.yml keeps this file out of generated projects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = ".jinja"  # copier.yml's _templates_suffix
TEMPLATE_ONLY = {"copier.yml", "tests/test_template.py"}  # copier.yml's _exclude
AUTHORS = (
    "{%- if user_name %}\n"
    "authors = [{ name = {{ user_name | tojson }}"
    "{% if user_email %}, email = {{ user_email | tojson }}{% endif %} }]\n"
    "{%- endif %}\n"
)


def default_answers() -> dict[str, str]:
    """Each question's default, templated defaults rendered in order, as Copier does."""
    config = yaml.safe_load((ROOT / "copier.yml").read_text())
    answers: dict[str, str] = {}
    for name, spec in config.items():
        if not name.startswith("_"):
            answers[name] = jinja2.Template(spec.get("default", "")).render(**answers)
    return answers


def twin_rules() -> dict[str, list[tuple[str, str]]]:
    """For each twinned file: (text in the file, its template) pairs; each text occurs once."""
    answers = default_answers()
    project = (f"project: {answers['wandb_project']}\n", "project: {{ wandb_project }}\n")
    return {
        "pyproject.toml": [
            (f'name = "{answers["project_name"]}"\n', 'name = "{{ project_name }}"\n'),
            (f'description = "{answers["description"]}"\n', "description = {{ description | tojson }}\n"),
            ('license = { text = "MIT" }\n', 'license = { text = "MIT" }\n' + AUTHORS),
        ],
        "configs/logger/wandb.yaml": [(f"        {project[0]}", f"        {project[1]}")],
        "configs/sweeps/mnist_cnn.yaml": [(f"\n{project[0]}", f"\n{project[1]}")],
        "configs/sweeps/polynomial_regression.yaml": [(f"\n{project[0]}", f"\n{project[1]}")],
    }


def made_twin(root: Path, name: str, rules: list[tuple[str, str]]) -> str:
    text = (root / name).read_text()
    for plain, templated in rules:
        if text.count(plain) != 1:
            raise ValueError(f"{name} should hold {plain!r} once: update twin_rules in {__file__}.")
        text = text.replace(plain, templated)
    return text


def remake_twins(root: Path = ROOT) -> None:
    for name, rules in twin_rules().items():
        (root / f"{name}{SUFFIX}").write_text(made_twin(root, name, rules))


def render(template: str, answers: dict[str, str]) -> str:
    # as Copier renders: trailing newlines kept; StrictUndefined catches a misspelt answer
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(**answers)


def test_every_twin_has_rules() -> None:
    twins = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob(f"*{SUFFIX}") if ".git" not in p.parts}
    assert twins == {f"{name}{SUFFIX}" for name in twin_rules()} | {"{{ _copier_conf.answers_file }}.jinja"}


@pytest.mark.parametrize("name", sorted(twin_rules()))
def test_twin_renders_to_its_file_with_the_default_answers(name: str) -> None:
    twin = (ROOT / f"{name}{SUFFIX}").read_text()
    remake = (
        f"{name}{SUFFIX} is out of date with {name}: remake the twins with `python tests/test_template.py`"
    )
    assert twin == made_twin(ROOT, name, twin_rules()[name]), remake
    assert render(twin, default_answers()) == (ROOT / name).read_text(), remake


# --- with Copier: a project made from the template, and a template change brought into it --------

GIT_ENV = {  # the tests' commits need an identity; a developer's git config must not matter
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "template-test@example.invalid",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "template-test@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def template_files() -> list[str]:
    """The template's files as the working tree has them: tracked, and untracked but not ignored."""
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted(name for name in listed if name and (ROOT / name).is_file())


@pytest.fixture
def template_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The template's working tree as the one commit of a new repository (uncommitted edits
    included, so the test checks what is about to be committed)."""
    pytest.importorskip("copier")
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    settings = tmp_path / "copier-settings.yml"  # no user defaults or trusted locations
    settings.write_text("defaults: {}\ntrust: []\n")
    monkeypatch.setenv("COPIER_SETTINGS_PATH", str(settings))
    repo = tmp_path / "template"
    for name in template_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template")
    return repo


def test_copy_with_the_default_answers_reproduces_the_template(template_repo: Path, tmp_path: Path) -> None:
    from copier import run_copy

    project = tmp_path / "default-project"
    run_copy(str(template_repo), project, defaults=True, vcs_ref="HEAD", quiet=True)
    made = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    expected = {name for name in template_files() if not name.endswith(SUFFIX)} - TEMPLATE_ONLY
    assert made == expected | {".copier-answers.yml"}
    for name in expected:
        assert (project / name).read_bytes() == (template_repo / name).read_bytes(), name
        assert os.access(project / name, os.X_OK) == os.access(template_repo / name, os.X_OK), name


def test_update_brings_a_template_change_into_a_project(template_repo: Path, tmp_path: Path) -> None:
    from copier import run_copy, run_update

    project = tmp_path / "my-project"
    answers = {"project_name": "my-project", "wandb_project": "my-wandb", "user_name": "Ada Lovelace"}
    run_copy(str(template_repo), project, data=answers, defaults=True, vcs_ref="HEAD", quiet=True)
    pyproject = (project / "pyproject.toml").read_text()
    assert 'name = "my-project"' in pyproject and 'authors = [{ name = "Ada Lovelace" }]' in pyproject
    assert "project: my-wandb" in (project / "configs/logger/wandb.yaml").read_text()
    assert "project: my-wandb" in (project / "configs/sweeps/mnist_cnn.yaml").read_text()
    assert not (project / "tests/test_template.py").exists()

    git(project, "init", "-q")  # `copier update` needs the project committed and clean
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nThe project's own line.\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "project from the template")

    # The template moves on: a README paragraph, a new test, a line in a file with a twin.
    (template_repo / "README.md").write_text("Template news.\n\n" + (template_repo / "README.md").read_text())
    (template_repo / "tests" / "test_news.py").write_text("def test_news() -> None:\n    pass\n")
    with (template_repo / "configs/logger/wandb.yaml").open("a") as f:
        f.write("# a line added by the template\n")
    remake_twins(template_repo)
    git(template_repo, "add", "-A")
    git(template_repo, "commit", "-q", "-m", "template change")

    run_update(project, defaults=True, overwrite=True, vcs_ref="HEAD", quiet=True)
    text = readme.read_text()
    assert text.startswith("Template news.\n") and text.endswith("The project's own line.\n")
    wandb = (project / "configs/logger/wandb.yaml").read_text()
    assert "project: my-wandb" in wandb and wandb.endswith("# a line added by the template\n")
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert git(template_repo, "rev-parse", f"{recorded['_commit']}^{{commit}}") == git(
        template_repo, "rev-parse", "HEAD"
    )

    # the project's own tests collect, the template's new one among them
    env = {**os.environ, "PYTHONPATH": str(project)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tests/test_news.py::test_news" in done.stdout
    assert "tests/test_template.py" not in done.stdout


if __name__ == "__main__":
    remake_twins()
    print(f"remade {', '.join(f'{name}{SUFFIX}' for name in twin_rules())}")
