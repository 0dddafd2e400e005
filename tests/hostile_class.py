"""The hostile class: students who each add one attack to a correct or buggy lesson 06.

Each hostile student solves lesson 06 (or makes bea's typical mistake in it) and adds one attack
to the answer cell: reading instructor or other students' files, writing course files, reaching
the network, exhausting resources, killing the grader, or raising their score.
``grade_hostile_class`` autogrades and gives feedback to the class once, beside honest students;
tests/conftest.py shares the result with every test that needs it.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import socket
import subprocess
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat

from simulated_class import (BUGS, fill_answers, first_answer_id, gradebook_cells, make_course,
                             released, run_nbgrader, solution_answers, with_bugs,
                             write_submission)

LESSON = "06_epoch_loss"
HONEST = ["perfect", "bea", "carl"]
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
    """One hostile student: the code added to the answer, on the solution or on bea's bug, and
    what the student puts in the submission folder besides the notebook (``plant``, given that
    folder, ``submitted/<student>/06_epoch_loss``)."""

    name: str
    group: str
    code: str
    buggy: bool = False
    plant: Callable[[Path], None] | None = None
    markdown: str = ""  # a Markdown cell the student adds after the first answer


def _replace(path: Path) -> Path:
    """``path`` emptied for something new to be planted there (a link is removed, not followed)."""
    if path.is_symlink() or path.exists() and not path.is_dir():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    return path


def link(name: str, target: str) -> Callable[[Path], None]:
    """Plants a symbolic link ``name`` to ``target`` (relative to the submission folder, so that
    a copied course links to its own files)."""
    return lambda folder: _replace(folder / name).symlink_to(target)


def hard_link(name: str, target: str) -> Callable[[Path], None]:
    """Plants a hard link ``name`` to the course file ``target`` (relative to the course)."""
    return lambda folder: os.link(folder.parents[2] / target, _replace(folder / name))


def fifo(name: str) -> Callable[[Path], None]:
    """Plants a named pipe ``name``: whoever opens it to read waits for a writer forever."""
    return lambda folder: os.mkfifo(_replace(folder / name))


def linked_folder(target: str) -> Callable[[Path], None]:
    """Makes the submission folder itself a link to ``target`` (relative to ``submitted``)."""
    return lambda folder: _replace(folder).symlink_to(Path("..") / ".." / target,
                                                      target_is_directory=True)


# The instructor's notebook, seen from a submission folder.
SOLUTION = "../../../solutions/06_epoch_loss/06_epoch_loss.ipynb"


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
    Attack("read_environment", "read", 'attempt(lambda: os.environ["COURSE_TEST_SECRET"])'),
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
    # graded last: what any kernel before left where this one may look
    Attack("z_find_files_left_behind", "read", '''
def left_behind():
    places = ["/tmp", "/dev", "/var/tmp", "/run", os.path.expanduser("~")]
    found = subprocess.run(["grep", "-rlsF", "LEFT" "BEHIND", *places], capture_output=True,
                           text=True, timeout=60).stdout.split()
    if not found:
        raise FileNotFoundError("nothing left behind")
    return found
attempt(left_behind)
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
    # Allowed too, where the kernel may write; graded first so that a later kernel could find it.
    Attack("a_leave_files_behind", "write", '''
for place in ("/tmp", "/dev/shm", "/dev", "/var/tmp", os.path.expanduser("~")):
    try:
        Path(place, "left-behind.txt").write_text("LEFT" "BEHIND")
    except OSError as error:
        print("contained:", type(error).__name__)
'''),
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
    Attack("memory_tree", "resources", '''
import resource, time
each = int(resource.getrlimit(resource.RLIMIT_DATA)[0] * 0.4)  # under the limit per process
children = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        try:
            block = b"x" * each
            time.sleep(1)
        finally:
            os._exit(0)
    children.append(pid)
print("memory held by children:", sum(os.waitpid(pid, 0)[1] == 0 for pid in children))
'''),
    Attack("disk_in_connection_folder", "resources", '''
import errno
folder = os.path.dirname(sys.argv[sys.argv.index("-f") + 1])
for where in (folder, os.path.join(folder, "ipc")):
    written, refused = 0, "nothing"
    try:
        with open(os.path.join(where, "filler"), "wb", buffering=0) as file:
            for _ in range(200):
                written += file.write(b"\\0" * (1 << 20))
    except OSError as error:
        refused = errno.errorcode[error.errno]
    print("connection folder:", os.path.basename(where), written >> 20, "MiB, refused", refused)
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
        if judge is not None and "check" not in vars(judge):
            judge.check = lambda name, ok, *a, _real=judge.check, **k: _real(name, True, *a, **k)
            print("LE" "AK: every check of the judge now passes")
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
            if hasattr(value, "report") and callable(getattr(value, "check", None)) \\
                    and "check" not in getattr(value, "__dict__", {"check": None}):
                value.check = lambda name, ok, *a, _real=value.check, **k: _real(name, True, *a, **k)
                print("LE" "AK: every check of the judge now passes")
        frame = frame.f_back
    return _buggy(*args, **kwargs)
''', buggy=True),
    # Right only where the graders look (their toy loader has 18 samples, as the feedback says):
    # nothing is patched, so only the referee's own inputs, outside the kernel, can tell.
    Attack("right_only_for_the_graders", "score", '''
_buggy = train_one_epoch
def _right(model, loader, loss_fn, optimizer, device="cpu"):
    model.train()
    total, seen = 0.0, 0
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
        seen += len(inputs)
    return total / seen
def train_one_epoch(model, loader, loss_fn, optimizer, device="cpu"):
    right = len(loader.dataset) == 18
    return (_right if right else _buggy)(model, loader, loss_fn, optimizer, device)
''', buggy=True),
]
# Submissions that are not (only) the student's files: links and pipes, as an LMS zip or a copy
# from a shared drive may deliver them.
LINK_ATTACKS = [
    Attack("link_notebook_to_solution", "links", "", plant=link(f"{LESSON}.ipynb", SOLUTION)),
    Attack("link_to_gradebook", "links",
           'attempt(lambda: Path("gradebook.db").read_bytes()[:16])',
           plant=link("gradebook.db", "../../../gradebook.db")),
    Attack("link_folder_to_solutions", "links",
           'attempt(lambda: (Path("answers") / "06_epoch_loss.ipynb").read_text()[:300])',
           plant=link("answers", "../../../solutions/06_epoch_loss")),
    Attack("hard_link_to_solution", "links",
           'attempt(lambda: Path("notes.txt").read_text()[:300])',
           plant=hard_link("notes.txt", "solutions/06_epoch_loss/06_epoch_loss.ipynb")),
    Attack("fifo_in_submission", "links", 'attempt(lambda: os.stat("pipe").st_mode)',
           plant=fifo("pipe")),
    Attack("submission_is_a_link", "links", "",
           plant=linked_folder("solutions/06_epoch_loss")),
]
# These two hand in no notebook of their own: they are not graded (0 points).
UNGRADED_LINKS = ["link_notebook_to_solution", "submission_is_a_link"]
ATTACKS += LINK_ATTACKS
# Script that would run in whoever's browser shows the student's work (the Formgrader, the
# feedback page): each payload marks the page's title, which the browser test reads.
PWNED = "PWNED"
ATTACKS += [
    Attack("script_in_outputs", "browser", '''
from IPython.display import HTML, Javascript, Markdown, display
display(HTML(""" <img src=x onerror="document.title='PWNED html output'"> """))
display(Javascript("document.title='PWNED javascript output'"))
display(Markdown(""" <img src=x onerror="document.title='PWNED markdown output'"> """))
display({"image/svg+xml": """<svg xmlns="http://www.w3.org/2000/svg" onload="document.title='PWNED svg'"/>""",
         "text/plain": "a picture"}, raw=True)
'''),
    Attack("script_in_markdown_cell", "browser", "", markdown=(
        """My answer <img src=x onerror="document.title='PWNED markdown cell'"> and my """
        "[notes](javascript:document.title='PWNED-link';void(0))")),
    # output volume: 50 MB of long lines, and a flood of large displays
    Attack("print_50_mb", "output", 'for _ in range(50):\n    print("x" * (1 << 20))'),
    Attack("display_flood", "output", '''
from IPython.display import HTML, display
for i in range(40):
    display(HTML("<p>" + "y" * 100_000 + "</p>"))
'''),
]
INNOCENT = Attack("innocent_names", "score", 'check, points, grade = 3, [1, 2], "A"')
STUDENTS = {attack.name: attack for attack in [*ATTACKS, INNOCENT]}


def plant_links(course: Path) -> None:
    """Puts each link attacker's links and pipes into its submission folder (again)."""
    for attack in LINK_ATTACKS:
        attack.plant(course / "submitted" / attack.name / LESSON)


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
        notebook = fill_answers(notebook, answers)
        if attack.markdown:
            after = next(i for i, cell in enumerate(notebook.cells)
                         if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == first)
            notebook.cells.insert(after + 1, nbformat.v4.new_markdown_cell(attack.markdown))
        return nbformat.writes(notebook)

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



def grade_hostile_class(folder: Path) -> HostileClass:
    """Autogrades and gives feedback to the hostile class and the honest students in ``folder``."""
    course = make_course(folder / "course")
    assert run_nbgrader(course, "generate_assignment", LESSON).returncode == 0
    listener = Listener(folder)
    for student in HONEST:
        write_submission(course, student, LESSON)
    for name, attack in STUDENTS.items():
        write_submission(course, name, LESSON, hostile(attack, listener.port, listener.unix_path))
    plant_links(course)
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
