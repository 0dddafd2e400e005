"""The hostile class (tests/hostile_class.py) graded end to end by real nbgrader with the
course's configuration: each test shows one group of attacks contained. Honest students graded
with and without the protections get the same scores.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.autograde.kernels.policy import UNPROTECTED_SETTING, missing
from hostile_class import (HONEST, INNOCENT, LEAK, LESSON, PROTECTED_FILES,
                           PWNED, SECRET, UNGRADED_LINKS, HostileClass, attacks_in, digest,
                           full_marks)
from simulated_class import gradebook_cells, make_course, run_nbgrader, write_submission

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")]


def test_every_student_is_graded_despite_the_attacks(hostile_class: HostileClass) -> None:
    # The grading went on to the end: every student who did not kill their own kernel is in the
    # gradebook with a score, the honest students first of all.
    failed = re.findall(r"error processing assignment '[^']+' for student '([^']+)'",
                        hostile_class.autograde.stdout + hostile_class.autograde.stderr)
    assert set(failed) <= {"kill_everything", "kill_parent", "hang_ignoring_interrupts",
                           *UNGRADED_LINKS}, failed
    assert hostile_class.score("perfect") == 4
    assert 0 < hostile_class.score("bea") < 4
    assert hostile_class.feedback.returncode == 0, hostile_class.feedback.stderr[-2000:]


@pytest.mark.parametrize("name", attacks_in("read"))
def test_reading_attacks_find_nothing(hostile_class: HostileClass, name: str) -> None:
    shown = hostile_class.outputs(name) + hostile_class.feedback_text(name)
    assert shown, f"{name} was not graded"
    assert LEAK not in shown
    assert SECRET not in shown
    assert "seed=1" not in hostile_class.feedback_text(name)
    # The honest part of the answer is still graded normally.
    assert hostile_class.score(name) == full_marks(hostile_class)


@pytest.mark.parametrize("name", attacks_in("write"))
def test_writing_attacks_change_nothing(hostile_class: HostileClass, name: str) -> None:
    course = hostile_class.course
    assert LEAK not in hostile_class.outputs(name)
    assert {p: digest(course / p) for p in PROTECTED_FILES} == hostile_class.digests_before
    assert (course / "submitted" / "perfect" / LESSON / f"{LESSON}.ipynb").exists()
    assert not (course / "autograded" / name / LESSON / "planted.txt").exists()
    assert hostile_class.score(name) == full_marks(hostile_class)


# What each link attacker planted in its submission folder, and the target it pointed at.
PLANTED = {"link_notebook_to_solution": f"{LESSON}.ipynb", "link_to_gradebook": "gradebook.db",
           "link_folder_to_solutions": "answers", "hard_link_to_solution": "notes.txt",
           "fifo_in_submission": "pipe", "submission_is_a_link": "."}


@pytest.mark.parametrize("name", attacks_in("links"))
def test_link_attacks_read_nothing_and_the_linked_is_not_graded(hostile_class: HostileClass,
                                                                name: str) -> None:
    course, planted = hostile_class.course, PLANTED[name]
    log = hostile_class.autograde.stdout + hostile_class.autograde.stderr
    shown = hostile_class.outputs(name) + hostile_class.feedback_text(name)
    # Nothing of a link's target was read: not printed, not copied beside the notebook.
    assert LEAK not in shown and "BEGIN SOLUTION" not in shown and "seed=1" not in shown
    assert not (course / "autograded" / name / LESSON / planted).is_symlink()
    assert planted == "." or planted.endswith(".ipynb") \
        or not (course / "autograded" / name / LESSON / planted).exists()
    # The instructor is told whose file was refused and why; the targets are unchanged.
    if planted == ".":
        assert f"Not grading the submission of student '{name}'" in log
    else:
        assert re.search(rf"Refused {re.escape(planted)} of student '{name}': "
                         r"a (symbolic link|hard link|FIFO)", log), log[-3000:]
    assert {p: digest(course / p) for p in PROTECTED_FILES} == hostile_class.digests_before
    assert (course / "gradebook.db").stat().st_size > 0
    if name in UNGRADED_LINKS:
        # A linked notebook (the instructor's solution) is not graded as the student's.
        assert hostile_class.score(name) == 0
        assert not (course / "autograded" / name / LESSON / f"{LESSON}.ipynb").exists()
        assert not (course / "feedback" / name).exists()
    else:
        assert hostile_class.score(name) == full_marks(hostile_class)
        assert "contained: FileNotFoundError" in hostile_class.outputs(name)


@pytest.mark.parametrize("name", attacks_in("output"))
def test_output_attacks_are_capped(hostile_class: HostileClass, name: str) -> None:
    # 50 MB of long lines and 4 MB of displays: each cell keeps 1 MB, marked as truncated.
    notebook = hostile_class.course / "autograded" / name / LESSON / f"{LESSON}.ipynb"
    page = hostile_class.course / "feedback" / name / LESSON / f"{LESSON}.html"
    assert notebook.stat().st_size < 2_000_000
    assert page.stat().st_size < 3_000_000
    assert "output truncated" in hostile_class.outputs(name)
    assert "output truncated" in hostile_class.feedback_text(name)
    assert hostile_class.score(name) == full_marks(hostile_class)


def _title_after_loading(pages: list[Path]) -> list[str]:
    """Each page's title after it loaded in headless Chromium and after every link in the
    notebook's content was clicked: what a student's script would have changed."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("apt-get install chromium to run the browser checks")
    titles = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            for path in pages:
                page = browser.new_page()
                page.goto(path.as_uri())
                page.wait_for_load_state("load")
                page.wait_for_timeout(500)
                title = page.title()
                # Links in what the notebook shows (not the page's own, which lead away).
                for link in page.locator(":is(.rendered_html, .jp-RenderedHTMLCommon, "
                                         ".text_cell_render) a").all():
                    if link.is_visible():
                        link.click(timeout=2000, no_wait_after=True)
                page.wait_for_timeout(500)
                titles.append(f"{title} | {page.title()}")
                page.close()
        finally:
            browser.close()
    return titles


def _as_html(notebook: Path, page: Path) -> Path:
    """``notebook`` rendered as the Formgrader's manual-grading page renders it (its own
    template and exporter), written to ``page``."""
    from nbconvert import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    exporter = HTMLExporter(template_name="formgrade",
                            extra_template_basedirs=[handlers.template_path])
    resources = {"assignment_id": LESSON, "notebook_id": LESSON, "submission_id": "1",
                 "index": 0, "total": 1, "base_url": "/", "student": notebook.parents[1].name,
                 "last_name": "", "first_name": "", "notebook_path": str(notebook)}
    page.write_text(exporter.from_filename(str(notebook), resources=resources)[0])
    return page


@pytest.mark.browser
def test_browser_attacks_run_no_script(hostile_class: HostileClass,
                                            tmp_path: Path) -> None:
    course, students = hostile_class.course, attacks_in("browser")
    feedback = [course / "feedback" / s / LESSON / f"{LESSON}.html" for s in students]
    graded = [_as_html(course / "autograded" / s / LESSON / f"{LESSON}.ipynb",
                       tmp_path / f"{s}.html") for s in students]
    # The payloads work: the submitted notebook, shown as it came, runs the Markdown cell's.
    submitted = _as_html(course / "submitted" / "script_in_markdown_cell" / LESSON /
                         f"{LESSON}.ipynb", tmp_path / "submitted.html")
    titles = _title_after_loading([submitted, *feedback, *graded])
    assert PWNED in titles[0]
    assert not any(PWNED in title for title in titles[1:]), titles
    for student in students:
        notebook = course / "autograded" / student / LESSON / f"{LESSON}.ipynb"
        shown = hostile_class.outputs(student) + "\n".join(
            cell.source for cell in nbformat.read(notebook, 4).cells
            if cell.cell_type == "markdown")
        assert "onerror" not in shown and "javascript:" not in shown
        # The graders' reports still show as they do, and so does the student's prose.
        text = hostile_class.feedback_text(student)
        assert "train_one_epoch" in text and "Passed" in text
        page = (course / "feedback" / student / LESSON / f"{LESSON}.html").read_text()
        assert "border-left:4px solid #1a7f37" in page
        assert hostile_class.score(student) == full_marks(hostile_class)
    assert "My answer" in hostile_class.feedback_text("script_in_markdown_cell")


def test_the_gradebook_holds_only_nbgraders_scores(hostile_class: HostileClass) -> None:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{hostile_class.course / 'gradebook.db'}") as gradebook:
        scores = [g.manual_score for s in gradebook.assignment_submissions(LESSON)
                  for nb in s.notebooks for g in nb.grades]
    assert scores and all(score is None for score in scores)


@pytest.mark.parametrize("name", attacks_in("network"))
def test_network_attacks_reach_nobody(hostile_class: HostileClass, name: str) -> None:
    assert LEAK not in hostile_class.outputs(name)
    assert hostile_class.listener.connections == 0
    assert hostile_class.score(name) == full_marks(hostile_class)


@pytest.mark.parametrize("name", attacks_in("resources"))
def test_resource_attacks_are_bounded(hostile_class: HostileClass, name: str) -> None:
    shown = hostile_class.outputs(name)
    assert LEAK not in shown
    if name == "processes":
        started = int(re.search(r"processes started: (\d+)", shown).group(1))
        assert started < 400
    if name == "memory_tree" and os.geteuid() == 0:  # each kernel's processes in one cgroup
        held = int(re.search(r"memory held by children: (\d)", shown).group(1))
        assert held <= 2  # 0.4 of the limit each
    if name == "disk_in_connection_folder" and os.geteuid() == 0:  # its sockets' 1 MiB only
        tried = re.findall(r"connection folder: \S+ (\d+) MiB, refused (\w+)", shown)
        assert tried == [("0", "EACCES"), ("1", "ENOSPC")]
    folder = hostile_class.course / "autograded" / name / LESSON
    assert not (folder / "big.bin").exists()
    if name != "hang_ignoring_interrupts":  # the hang ran the answer cell into the time limit
        assert hostile_class.score(name) == full_marks(hostile_class)


@pytest.mark.parametrize("name", attacks_in("kill"))
def test_killing_reaches_nothing_outside_the_kernel(hostile_class: HostileClass, name: str) -> None:
    # The signal reached no process grading needs: the killer's own notebook ran to its end and
    # its honest answer earned full marks, and nbgrader went on to grade the class.
    assert hostile_class.score(name) == full_marks(hostile_class) == 4
    assert all(hostile_class.score(student) > 0 for student in ("perfect", "bea", "carl"))


# Score attacks on bea's buggy answer, and what each meets: patching the graders or the library
# functions they rely on is found and named (tampered, 0); reading the grader's frames is
# refused (the refusal ends the student's function: 0); rebinding names, lying return values
# and swapped code change nothing (bea's own score).
PATCHES = ["patch_graders_module", "patch_report_score", "patch_torch_allclose",
           "patch_exercise_registry", "patch_math_isclose"]
REFUSED = ["read_grader_stack", "read_grader_stack_via_traceback"]


@pytest.mark.parametrize("name", attacks_in("score"))
def test_score_attacks_gain_nothing(hostile_class: HostileClass, name: str) -> None:
    feedback = hostile_class.feedback_text(name)
    assert LEAK not in hostile_class.outputs(name) + feedback
    if name in PATCHES:
        assert hostile_class.score(name) == 0
        assert "tampered" in feedback
    elif name in REFUSED:
        assert hostile_class.score(name) == 0
        assert "Refused: During autograding, notebook code may not use" in feedback
    else:
        assert hostile_class.score(name) == hostile_class.score("bea"), feedback[-3000:]
    if name == "right_only_for_the_graders":  # its reports said full marks: the referee's word
        assert "Checked outside the notebook, train_one_epoch scores at most 0.5" in feedback


def test_the_mistakes_report_lists_the_tampered(hostile_class: HostileClass,
                                                tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "course_utils.autograde.mistakes", "--out",
                          str(tmp_path)],
                         cwd=hostile_class.course, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    with (tmp_path / "mistakes.csv").open() as f:
        tampered = {student for row in csv.DictReader(f) if row["code"] == "tampered"
                    for student in row["student_ids"].split()}
    assert tampered == set(PATCHES)


def test_innocent_names_are_not_punished(hostile_class: HostileClass) -> None:
    assert hostile_class.score(INNOCENT.name) == full_marks(hostile_class)


def test_feedback_hides_the_hidden_tests_and_keeps_the_reports(
        hostile_class: HostileClass) -> None:
    source = (hostile_class.course / "solutions" / LESSON / f"{LESSON}.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" in source and "seed=1" in source
    for student in HONEST:
        page = hostile_class.feedback_text(student)
        assert "HIDDEN TESTS" not in page and "seed=1" not in page
        assert "train_one_epoch" in page
    # bea's two reports (the visible test and the hidden one) are both there.
    assert hostile_class.feedback_text("bea").count("returns_last_batch_loss") >= 2


def test_no_false_alarm_about_changed_test_cells(hostile_class: HostileClass) -> None:
    log = hostile_class.autograde.stdout + hostile_class.autograde.stderr
    assert "Attribute 'checksum'" not in log


def test_honest_students_get_the_same_scores_protected_or_not(hostile_class: HostileClass,
                                                              tmp_path: Path) -> None:
    """The honest students, graded beside the hostile class with every protection on, graded
    again with them off."""
    course = make_course(tmp_path / "course")
    assert run_nbgrader(course, "generate_assignment", LESSON).returncode == 0
    for student in HONEST:
        write_submission(course, student, LESSON)
    run = run_nbgrader(course, "autograde", LESSON, "--Sandbox.enabled=False")
    assert run.returncode == 0, run.stderr[-3000:]
    unprotected = gradebook_cells(course / "gradebook.db")
    protected = {key: cell for key, cell in hostile_class.cells.items() if key[0] in HONEST}
    assert set(protected) == set(unprotected) and protected
    for key, cell in protected.items():
        assert cell.auto_score == unprotected[key].auto_score, key


def test_autograde_stops_when_the_sandbox_cannot_start(tmp_path: Path) -> None:
    course = make_course(tmp_path / "course")
    assert run_nbgrader(course, "generate_assignment", "02_loss").returncode == 0
    write_submission(course, "perfect", "02_loss")
    # A machine without bubblewrap: nbgrader finds only the environment's own commands.
    environment_only = Path(sys.executable).parent
    run = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", "02_loss"], cwd=course,
                         env={**os.environ, "PATH": str(environment_only)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    message = run.stdout + run.stderr
    assert "Autograding stopped before grading anyone" in message
    assert "bwrap" in message and UNPROTECTED_SETTING in message
    assert not (course / "autograded").exists()


def test_an_environment_under_tmp_stays_visible_in_the_sandbox(tmp_path: Path,
                                                                monkeypatch) -> None:
    # A clone in /tmp puts the venv there too; the sandbox's private /tmp must not hide it.
    from course_utils.autograde.kernels.policy import Sandbox, bwrap_command
    environment = tmp_path / "venv"
    environment.mkdir()
    (environment / "marker").write_text("visible\n")
    for path in (tmp_path, environment, environment / "marker"):
        path.chmod(0o755)
    monkeypatch.setattr(sys, "prefix", str(environment))
    folder, private = tmp_path / "notebook", tmp_path / "private"
    folder.mkdir()
    private.mkdir()
    command = bwrap_command(["cat", str(environment / "marker")], str(folder), str(private),
                            Sandbox())
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "visible\n"), run.stderr
