"""The Copier template (copier.yml): its folder of links and twins, kept in step with the project.

This repository is the template and stays a working project. Copier reads the template from
``.copier/template`` (copier.yml's ``_subdirectory``): a relative link to every top-level entry a
new project gets, and, for the top-level files that hold an answer, a twin ``X.jinja`` made from
``X`` (README.md: title and first paragraph; pyproject.toml: name, description, authors). Deeper
files that hold an answer (the W&B project of configs/logger/wandb.yaml and configs/sweeps/*.yaml)
have their twin beside them, inside a linked folder; Copier renders a twin in place of its file.
After adding a top-level entry or editing a twinned file, remake the links and twins (the fast
tests below fail until then):

    python tests/test_template.py

Template machinery only: copier.yml keeps this file out of generated projects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".copier" / "template"  # copier.yml's _subdirectory
SUFFIX = ".jinja"  # copier.yml's _templates_suffix
ANSWERS_TWIN = "{{ _copier_conf.answers_file }}.jinja"
ANSWERS_TEXT = (
    "# Changes here will be overwritten by Copier; NEVER EDIT MANUALLY\n{{ _copier_answers|to_nice_yaml -}}\n"
)
MACHINERY = {"copier.yml", ".copier"}  # top-level entries that no project gets
EXCLUDED = {"tests/test_template.py"}  # copier.yml's _exclude: linked, but left out of projects
AUTHORS = (
    "{%- if user_name %}\n"
    "authors = [{ name = {{ user_name | tojson }}"
    "{% if user_email %}, email = {{ user_email | tojson }}{% endif %} }]\n"
    "{%- endif %}"
)
WANDB_PROJECT = (r"^( *)project: .*$", r"\1project: {{ wandb_project }}")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def working_tree(root: Path) -> list[str]:
    """The paths of the working tree: tracked, or untracked and not ignored (links as links)."""
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted(name for name in listed if name and os.path.lexists(root / name))


def default_answers() -> dict[str, str]:
    """Each question's default, templated defaults rendered in order, as Copier does."""
    config = yaml.safe_load((ROOT / "copier.yml").read_text())
    answers: dict[str, str] = {}
    for name, spec in config.items():
        if not name.startswith("_"):
            answers[name] = jinja2.Template(str(spec.get("default", ""))).render(**answers)
    return answers


def twin_rules(root: Path = ROOT) -> dict[str, list[tuple[str, str]]]:
    """Each twinned file: (pattern, replacement) pairs, each pattern matching one whole line once."""
    rules = {
        "pyproject.toml": [
            (r'^name = ".*"$', 'name = "{{ project_name }}"'),
            (r'^description = ".*"$', "description = {{ description | tojson }}" + AUTHORS),
        ],
        "configs/logger/wandb.yaml": [WANDB_PROJECT],
    }
    for sweep in sorted((root / "configs" / "sweeps").glob("*.yaml")):
        rules[f"configs/sweeps/{sweep.name}"] = [WANDB_PROJECT]
    return rules


def twin_path(root: Path, name: str) -> Path:
    """Top-level twins in the template folder, deeper ones beside their files."""
    return root / (f"{name}{SUFFIX}" if "/" in name else f".copier/template/{name}{SUFFIX}")


def raw(text: str) -> str:
    """``text`` as Jinja source that renders to itself."""
    if not re.search(r"{[{%#]", text):
        return text
    if "endraw" in text:
        raise ValueError("text with both Jinja markers and 'endraw' cannot be twinned: rephrase it")
    return "{% raw %}" + text + "{% endraw %}"


def readme_parts(text: str) -> tuple[str, str, str]:
    """README.md as (title, first paragraph, rest): the title is the first line, ``# Title``, and the
    first paragraph the lines between the first and second blank lines after it."""
    match = re.fullmatch(r"# ([^\n]+)\n\n(.+?)\n\n(.*)", text, flags=re.DOTALL)
    if match is None:
        raise ValueError("README.md should start with '# Title', a blank line, a paragraph and a blank line")
    return match.group(1), match.group(2), match.group(3)


def made_twin(root: Path, name: str) -> str:
    """The twin of ``root/name``: its text with the answers' places templated, the rest verbatim."""
    text = (root / name).read_text()
    if name == "README.md":
        return "# {{ project_name }}\n\n{{ description }}\n\n" + raw(readme_parts(text)[2])
    pieces, at = [], 0
    for pattern, replacement in twin_rules(root)[name]:
        found = list(re.finditer(pattern, text, flags=re.MULTILINE))
        if len(found) != 1:
            raise ValueError(f"{name} should hold one line matching {pattern!r}: update twin_rules in {__file__}.")
        pieces += [raw(text[at : found[0].start()]), found[0].expand(replacement)]
        at = found[0].end()
    return "".join(pieces) + raw(text[at:])


def twinned(root: Path = ROOT) -> list[str]:
    return ["README.md", *twin_rules(root)]


def links(root: Path = ROOT) -> list[str]:
    """The top-level entries of the working tree that a project gets as they are: linked."""
    entries = {name.split("/")[0] for name in working_tree(root)} - MACHINERY
    return sorted(entries - set(twinned(root)))


def link_name(name: str) -> str:
    """A link's name in the template, which Copier renders to ``name``: a Python file's ends in
    ``.{{'py'}}`` (``git ls-files '*.py'`` lists no copy), and ``.gitignore`` is spelt
    ``{{'.gitignore'}}`` (git would read a link named so as an ignore file, and refuses links)."""
    if name == ".gitignore":
        return "{{'.gitignore'}}"
    return f"{name.removesuffix('.py')}.{{{{'py'}}}}" if name.endswith(".py") else name


def remake(root: Path = ROOT) -> None:
    """Rebuild ``.copier/template`` (links, the answers file's twin, the top-level twins) and the
    deeper twins; a twin whose file is gone goes too."""
    template = root / ".copier" / "template"
    template.mkdir(parents=True, exist_ok=True)
    for name in working_tree(root):  # the top-level twins, and twins whose file is gone
        stale = name.startswith(".copier/") or not os.path.lexists(root / name.removesuffix(SUFFIX))
        if name.endswith(SUFFIX) and stale and os.path.isfile(root / name):
            (root / name).unlink()
    for entry in template.iterdir():
        if entry.is_symlink():
            entry.unlink()
    for name in links(root):
        (template / link_name(name)).symlink_to(Path("..", "..", name))
    (template / ANSWERS_TWIN).write_text(ANSWERS_TEXT)
    for name in twinned(root):
        twin_path(root, name).write_text(made_twin(root, name))


def render(template: str, answers: dict[str, str]) -> str:
    # as Copier renders: trailing newlines kept; StrictUndefined catches a misspelt answer
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(**answers)


REMAKE = "remake the template's links and twins: python tests/test_template.py"


def test_no_twin_or_templated_name_at_the_top_level() -> None:
    """The repository's own top level is a plain project: no .jinja file, no Jinja in a name."""
    assert not [p.name for p in ROOT.iterdir() if p.name.endswith(SUFFIX) or "{" in p.name]
    assert yaml.safe_load((ROOT / "copier.yml").read_text())["_subdirectory"] == ".copier/template"


def test_every_top_level_entry_is_linked_or_twinned() -> None:
    """The template folder holds exactly a relative link per project entry, the twins and the answers file."""
    found = {p.name: p for p in TEMPLATE.iterdir()}
    expected = {*map(link_name, links()), *(f"{name}{SUFFIX}" for name in twinned() if "/" not in name), ANSWERS_TWIN}
    assert sorted(found) == sorted(expected), REMAKE
    for name in links():
        link = found[link_name(name)]
        assert link.is_symlink() and os.readlink(link) == os.path.join("..", "..", name), REMAKE
        assert link.resolve() == (ROOT / name).resolve()
    assert (TEMPLATE / ANSWERS_TWIN).read_text() == ANSWERS_TEXT


def test_every_twin_has_rules() -> None:
    """No stray twin: every .jinja file of the project is one that twin_rules makes."""
    twins = {name for name in working_tree(ROOT) if name.endswith(SUFFIX)}
    expected = {twin_path(ROOT, name).relative_to(ROOT).as_posix() for name in twinned()}
    assert twins == expected | {f".copier/template/{ANSWERS_TWIN}"}, REMAKE


@pytest.mark.parametrize("name", twinned())
def test_twin_is_made_from_its_file(name: str) -> None:
    """A twin equals the one made from its file now, and renders to that file with the default answers."""
    twin = twin_path(ROOT, name).read_text()
    assert twin == made_twin(ROOT, name), f"{twin_path(ROOT, name)} is out of date with {name}: {REMAKE}"
    rendered, text = render(twin, default_answers()), (ROOT / name).read_text()
    if name == "README.md":  # a project's README carries its own name and description
        answers = {"project_name": "my-project", "description": "What it does."}
        assert render(twin, answers) == "# my-project\n\nWhat it does.\n\n" + readme_parts(text)[2]
    else:
        assert rendered == text, f"copier.yml's default answers should render {name} as it is"


# --- with Copier: a project made from the template, and a template change brought into it --------

GIT_ENV = {  # the tests' commits need an identity; a developer's git config must not matter
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "template-test@example.invalid",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "template-test@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
ANSWERS = {"project_name": "my-project", "wandb_project": "my-wandb", "user_name": "Ada Lovelace"}


def run(*args: str, cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def template_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working tree, links included, as the one commit of a new repository (uncommitted edits
    included, so the test checks what is about to be committed)."""
    pytest.importorskip("copier")
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    settings = tmp_path / "copier-settings.yml"  # no user defaults or trusted locations
    settings.write_text("defaults: {}\ntrust: []\n")
    monkeypatch.setenv("COPIER_SETTINGS_PATH", str(settings))
    repo = tmp_path / "template"
    for name in working_tree(ROOT):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            (repo / name).symlink_to(os.readlink(ROOT / name))
        else:
            shutil.copy2(ROOT / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template")
    return repo


@pytest.mark.slow
def test_copy_then_update(template_repo: Path, tmp_path: Path) -> None:
    """`copier copy` makes a project that carries the answers and whose tests collect; `copier update`
    then brings a template change in (README paragraph, new test, new top-level file, twinned file)."""
    project = tmp_path / "my-project"
    data = [arg for key, value in ANSWERS.items() for arg in ("--data", f"{key}={value}")]
    copier = [sys.executable, "-m", "copier"]
    run(*copier, "copy", "--defaults", *data, "--vcs-ref", "HEAD", str(template_repo), str(project), cwd=tmp_path)

    made = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert not [p for p in project.rglob("*") if p.is_symlink()]
    plain = [n for n in working_tree(template_repo) if n.split("/")[0] not in MACHINERY and n not in EXCLUDED]
    plain = [n for n in plain if not n.endswith(SUFFIX)]
    assert made == sorted([*plain, ".copier-answers.yml"])
    for name in set(plain) - set(twinned()):
        assert (project / name).read_bytes() == (template_repo / name).read_bytes(), name
        assert os.access(project / name, os.X_OK) == os.access(template_repo / name, os.X_OK), name
    pyproject = (project / "pyproject.toml").read_text()
    assert 'name = "my-project"' in pyproject and 'authors = [{ name = "Ada Lovelace" }]' in pyproject
    readme = project / "README.md"
    title, paragraph, rest = readme_parts(readme.read_text())
    assert (title, paragraph) == ("my-project", default_answers()["description"])
    assert rest == readme_parts((template_repo / "README.md").read_text())[2]
    for name in twin_rules(template_repo):
        if name != "pyproject.toml":
            assert "project: my-wandb" in (project / name).read_text(), name
    collected = run(sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", cwd=project)
    assert (
        re.search(r"^[1-9]\d*(/\d+)? tests collected", collected, flags=re.MULTILINE)
        and "test_template" not in collected
    )

    git(project, "init", "-q")  # `copier update` needs the project committed and clean
    readme.write_text(readme.read_text() + "\nThe project's own line.\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "project from the template")

    # The template moves on: a README paragraph, a test, a top-level file, a line in a twinned file.
    text = (template_repo / "README.md").read_text()
    title, paragraph, rest = readme_parts(text)
    (template_repo / "README.md").write_text(f"# {title}\n\n{paragraph}\n\nTemplate news.\n\n{rest}")
    (template_repo / "tests" / "test_news.py").write_text("def test_news() -> None:\n    assert 1 + 1 == 2\n")
    (template_repo / "CHANGES.md").write_text("# Changes\n")
    with (template_repo / "configs/logger/wandb.yaml").open("a") as f:
        f.write("# a line added by the template\n")
    run(sys.executable, "tests/test_template.py", cwd=template_repo)  # the links and twins, remade
    git(template_repo, "add", "-A")
    git(template_repo, "commit", "-q", "-m", "template change")

    run(*copier, "update", "--defaults", "--vcs-ref", "HEAD", cwd=project)
    text = readme.read_text()
    assert text.startswith("# my-project\n") and "\n\nTemplate news.\n\n" in text
    assert text.endswith("The project's own line.\n")
    wandb = (project / "configs/logger/wandb.yaml").read_text()
    assert "project: my-wandb" in wandb and wandb.endswith("# a line added by the template\n")
    assert (project / "tests/test_news.py").is_file() and (project / "CHANGES.md").read_text() == "# Changes\n"
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    commit = git(template_repo, "rev-parse", f"{recorded['_commit']}^{{commit}}")
    assert commit == git(template_repo, "rev-parse", "HEAD")
    assert {k: recorded[k] for k in ANSWERS} == ANSWERS


if __name__ == "__main__":
    remake()
    print(f"remade {TEMPLATE.relative_to(ROOT)} ({len(links())} links) and the twins of {', '.join(twinned())}")
