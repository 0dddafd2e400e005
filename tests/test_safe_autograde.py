"""A hostile class graded end to end by real nbgrader with the course's configuration.

Each hostile student solves lesson 06 (or makes bea's typical mistake in it) and adds one attack
to the answer cell: reading instructor or other students' files, writing course files, reaching
the network, exhausting resources, killing the grader, or raising their score. The class is
autograded and given feedback once; each test shows one group of attacks contained. Honest
students graded with and without the protections get the same scores.
"""

from __future__ import annotations

import csv
import hashlib
import html
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from course_utils.autograde.kernels.policy import UNPROTECTED_SETTING, missing
from simulated_class import (BUGS, fill_answers, first_answer_id, make_course, released,
                             run_nbgrader, solution_answers, with_bugs, write_submission)
from test_instructor_workflow import gradebook_cells

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")]

LESSON = "06_epoch_loss"
HONEST = ["perfect", "bea", "carl"]
HONEST_LESSONS = ["02_loss", LESSON]
# Printed only by an attack that worked: the source spells it "LE" "AK", so only output has it.
LEAK = "LEAK"
SECRET = "course-test-secret-7f3a"
# Each attack runs after the answer's code. COURSE is the course directory, found from the
# notebook's own folder (autograded/<student>/<lesson>), as an attacker would.
PRELUDE = """
import os, sys, socket, shutil, subprocess, signal, math, sqlite3
from pathlib import Path
COURSE = Path.cwd().parents[2]
def attempt(action):
    try:
        print("LE" "AK", repr(action())[:300])
    except BaseException as error:
        print("contained:", type(error).__name__)
"""


@dataclass(frozen=True)
class Attack:
    """One hostile student: the code added to the answer, on the solution or on bea's bug."""

    name: str
    group: str
    code: str
    buggy: bool = False


ATTACKS = [
    # read
    Attack("read_solution", "read",
           'attempt(lambda: (COURSE / "solutions/06_epoch_loss/06_epoch_loss.ipynb").read_text())'),
    Attack("read_gradebook", "read", 'attempt(lambda: (COURSE / "gradebook.db").read_bytes())'),
    Attack("read_other_student", "read", 'attempt(lambda: (COURSE / "submitted/perfect/'
                                         '06_epoch_loss/06_epoch_loss.ipynb").read_text())'),
    Attack("read_config", "read", 'attempt(lambda: (COURSE / "nbgrader_config.py").read_text())'),
    Attack("read_graded_copy", "read",
           'attempt(lambda: [p.read_text() for p in Path.cwd().glob("*.ipynb")][0])'),
    Attack("read_environment", "read", f'attempt(lambda: os.environ["COURSE_TEST_SECRET"])'),
    Attack("read_hidden_tests_from_history", "read", '''
_honest = train_one_epoch
def train_one_epoch(*args, **kwargs):
    shell = get_ipython()
    seen = repr([shell.user_ns.get("In"), shell.user_ns.get("_ih"),
                 [cell for cell in shell.history_manager.input_hist_raw]])
    if "seed=" in seen:
        raise RuntimeError("LE" "AK " + seen)
    return _honest(*args, **kwargs)
'''),
    # write
    Attack("write_config", "write",
           'attempt(lambda: open(COURSE / "nbgrader_config.py", "a").write("\\nc.X = 1\\n"))'),
    Attack("write_solution", "write", 'attempt(lambda: open(COURSE / "solutions/06_epoch_loss/'
                                      '06_epoch_loss.ipynb", "a").write(" "))'),
    Attack("a_delete_other_submission", "write",
           'attempt(lambda: shutil.rmtree(COURSE / "submitted" / "perfect"))'),
    Attack("write_gradebook", "write", 'attempt(lambda: sqlite3.connect(COURSE / "gradebook.db")'
                                       '.execute("update grade set manual_score = 100"))'),
    Attack("write_own_folder", "write",  # allowed, in a scratch space that ends with the kernel
           'Path("planted.txt").write_text("x")'),
    # network
    Attack("network_loopback", "network",
           'attempt(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=3))'),
    Attack("network_unix_socket", "network", 'attempt(lambda: socket.socket(socket.AF_UNIX)'
                                             '.connect("{unix_socket}"))'),
    # resources
    Attack("memory", "resources", 'attempt(lambda: len(bytearray(64 << 30)))'),
    Attack("processes", "resources", '''
started = []
attempt(lambda: [started.append(subprocess.Popen(["sleep", "60"])) for _ in range(400)])
print("processes started:", len(started))
'''),
    Attack("disk", "resources", '''
def fill():
    with open("big.bin", "wb") as f:
        for _ in range(64):
            f.write(b"\\0" * (64 << 20))
attempt(fill)
'''),
    Attack("hang_ignoring_interrupts", "resources",
           'signal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass'),
    # kill
    Attack("kill_parent", "kill", 'os.kill(os.getppid(), signal.SIGKILL)'),
    Attack("kill_everything", "kill", 'os.kill(-1, signal.SIGKILL)'),
    # score: on bea's last-batch-loss bug
    Attack("rebind_points", "score", 'points = lambda *args, **kwargs: 4', buggy=True),
    Attack("rebind_grade", "score", '''
from course_utils.graders import grade as _grade
grade = lambda name, student, **options: _grade("mse_loss", lambda p, t: ((p - t) ** 2).mean())
''', buggy=True),
    Attack("patch_graders_module", "score", '''
import course_utils.graders as graders
_real = graders.grade
graders.grade = lambda name, student, **options: _real("mse_loss",
                                                       lambda p, t: ((p - t) ** 2).mean())
''', buggy=True),
    Attack("patch_report_score", "score", '''
from course_utils.graders import Report
Report.score = property(lambda self: 1.0)
Report.passed = property(lambda self: True)
''', buggy=True),
    Attack("patch_torch_allclose", "score", '''
import torch
torch.allclose = lambda *args, **kwargs: True
torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)
''', buggy=True),
    Attack("patch_exercise_registry", "score", '''
from course_utils.graders import declare
declare._REGISTRY["train_one_epoch"].grader = lambda *args, **kwargs: None
''', buggy=True),
    Attack("patch_math_isclose", "score", 'math.isclose = lambda *args, **kwargs: True',
           buggy=True),
    Attack("swap_grader_code", "score", '''
from course_utils import graders
attempt(lambda: setattr(graders.grade, "__code__", (lambda *a, **k: None).__code__))
''', buggy=True),
    Attack("lying_float", "score", '''
class Agreeable(float):
    __eq__ = lambda self, other: True
    __ne__ = lambda self, other: False
    __sub__ = __rsub__ = lambda self, other: 0.0
    __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: True
    __abs__ = lambda self: 0.0
    __float__ = lambda self: 0.0
_buggy = train_one_epoch
train_one_epoch = lambda *args, **kwargs: Agreeable(_buggy(*args, **kwargs))
''', buggy=True),
    Attack("read_grader_stack", "score", '''
_buggy = train_one_epoch
def train_one_epoch(*args, **kwargs):
    frame = sys._getframe()
    while frame is not None:
        judge = frame.f_locals.get("judge")
        if judge is not None:
            judge.expect = lambda *a, **k: True
        frame = frame.f_back
    return _buggy(*args, **kwargs)
''', buggy=True),
    Attack("read_grader_stack_via_traceback", "score", '''
_buggy = train_one_epoch
def train_one_epoch(*args, **kwargs):
    try:
        raise ValueError
    except ValueError as error:
        frame = error.__traceback__.tb_frame
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if hasattr(value, "report") and hasattr(value, "expect"):
                value.expect = lambda *a, **k: True
        frame = frame.f_back
    return _buggy(*args, **kwargs)
''', buggy=True),
]
INNOCENT = Attack("innocent_names", "score", 'check, points, grade = 3, [1, 2], "A"')
STUDENTS = {attack.name: attack for attack in [*ATTACKS, INNOCENT]}


def hostile(attack: Attack, port: int, unix_socket: str):
    """The builder of the student who makes ``attack`` (see ``simulated_class.write_submission``)."""

    def build(course: Path, lesson: str) -> str:
        notebook = released(course, lesson)
        answers = solution_answers(course, lesson)
        if attack.buggy:
            answers = with_bugs(answers, [BUGS["bea"]["train_one_epoch"]])
        first = first_answer_id(notebook)
        code = attack.code.replace("{port}", str(port)).replace("{unix_socket}", unix_socket)
        answers[first] += "\n" + PRELUDE + code
        return nbformat.writes(fill_answers(notebook, answers))

    return build


class Listener:
    """A TCP listener on the loopback interface and a unix socket: counts who connects."""

    def __init__(self, folder: Path):
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.unix_path = str(folder / "listener.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        self.unix.listen()
        self.port = self.tcp.getsockname()[1]
        self.connections = 0
        for server in (self.tcp, self.unix):
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                server.accept()
            except OSError:
                return
            self.connections += 1

    def close(self) -> None:
        self.tcp.close()
        self.unix.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class HostileClass:
    """The hostile class after autograding and feedback, and what it left behind."""

    course: Path
    autograde: subprocess.CompletedProcess[str]
    feedback: subprocess.CompletedProcess[str]
    listener: Listener
    digests_before: dict[str, str]
    cells: dict

    def score(self, student: str, lesson: str = LESSON) -> float:
        return sum(cell.auto_score or 0 for (s, l, _), cell in self.cells.items()
                   if (s, l) == (student, lesson))

    def feedback_text(self, student: str) -> str:
        page = self.course / "feedback" / student / LESSON / f"{LESSON}.html"
        return html.unescape(re.sub(r"<[^>]+>", "", page.read_text())) if page.exists() else ""

    def outputs(self, student: str) -> str:
        """Everything the student's graded notebook output."""
        path = self.course / "autograded" / student / LESSON / f"{LESSON}.ipynb"
        if not path.exists():
            return ""
        notebook = nbformat.read(path, as_version=4)
        return "\n".join(str(cell.outputs) for cell in notebook.cells
                         if cell.cell_type == "code")


PROTECTED_FILES = ["nbgrader_config.py", "solutions/06_epoch_loss/06_epoch_loss.ipynb"]


@pytest.fixture(scope="module")
def hostile_class(tmp_path_factory: pytest.TempPathFactory) -> HostileClass:
    folder = tmp_path_factory.mktemp("hostile")
    course = make_course(folder / "course")
    assert run_nbgrader(course, "generate_assignment", LESSON).returncode == 0
    listener = Listener(folder)
    for student in HONEST:
        write_submission(course, student, LESSON)
    for name, attack in STUDENTS.items():
        write_submission(course, name, LESSON, hostile(attack, listener.port, listener.unix_path))
    before = {name: digest(course / name) for name in PROTECTED_FILES}
    os.environ["COURSE_TEST_SECRET"] = SECRET
    try:
        # The hang can only end at the cell time limit: keep it short.
        autograde = run_nbgrader(course, "autograde", LESSON, "--Execute.timeout=60")
    finally:
        del os.environ["COURSE_TEST_SECRET"]
    feedback = run_nbgrader(course, "generate_feedback", LESSON)
    listener.close()
    return HostileClass(course, autograde, feedback, listener, before,
                        gradebook_cells(course / "gradebook.db"))


def full_marks(graded: HostileClass) -> float:
    return graded.score("perfect")


def attacks_in(group: str) -> list[str]:
    return [attack.name for attack in ATTACKS if attack.group == group]


def test_every_student_is_graded_despite_the_attacks(hostile_class: HostileClass) -> None:
    # The grading went on to the end: every student who did not kill their own kernel is in the
    # gradebook with a score, the honest students first of all.
    failed = re.findall(r"error processing assignment '[^']+' for student '([^']+)'",
                        hostile_class.autograde.stdout + hostile_class.autograde.stderr)
    assert set(failed) <= {"kill_everything", "kill_parent", "hang_ignoring_interrupts"}, failed
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
    folder = hostile_class.course / "autograded" / name / LESSON
    assert not (folder / "big.bin").exists()
    if name != "hang_ignoring_interrupts":  # the hang ran the answer cell into the time limit
        assert hostile_class.score(name) == full_marks(hostile_class)


@pytest.mark.parametrize("name", attacks_in("kill"))
def test_killing_costs_only_the_killers_notebook(hostile_class: HostileClass, name: str) -> None:
    # Whatever became of the killer's notebook, nbgrader went on to grade the class.
    assert hostile_class.score("perfect") == 4
    assert hostile_class.score(name) <= full_marks(hostile_class)


# Score attacks that patch the graders or their library functions: found and named.
PATCHES = ["patch_graders_module", "patch_report_score", "patch_torch_allclose",
           "patch_exercise_registry", "patch_math_isclose"]


@pytest.mark.parametrize("name", attacks_in("score"))
def test_score_attacks_gain_nothing(hostile_class: HostileClass, name: str) -> None:
    honest = hostile_class.score("bea")
    assert hostile_class.score(name) <= honest, hostile_class.feedback_text(name)[-3000:]
    if name in PATCHES:
        assert hostile_class.score(name) == 0
        assert "tampered" in hostile_class.feedback_text(name)


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


@pytest.fixture(scope="module")
def honest_grades(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The honest class graded with and without the protections."""
    grades = {}
    for label, options in [("protected", []), ("unprotected", ["--Sandbox.enabled=False"])]:
        course = make_course(tmp_path_factory.mktemp(label) / "course")
        for lesson in HONEST_LESSONS:
            assert run_nbgrader(course, "generate_assignment", lesson).returncode == 0
            for student in HONEST:
                write_submission(course, student, lesson)
            run = run_nbgrader(course, "autograde", lesson, *options)
            assert run.returncode == 0, run.stderr[-3000:]
        grades[label] = gradebook_cells(course / "gradebook.db")
    return grades


def test_honest_students_get_the_same_scores_protected_or_not(honest_grades: dict) -> None:
    protected, unprotected = honest_grades["protected"], honest_grades["unprotected"]
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
