"""The course on a JupyterHub (`make hub`): three students and the instructor, in headless Chromium.

Students fetch, answer, validate and hand in lesson 05 from their Assignment List, each in a
server of their own running as their Unix user; the instructor collects, autogrades (in the
sandbox, as the instructor's ordinary user), and releases feedback from the Formgrader; the
students fetch their feedback. One student is hostile: its answer tries to read the
instructor's course, another student's home and the other submissions in the exchange.
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import nbformat
import pytest
from simulated_class import BUGS, fill_answers, solution_answers, with_bugs
from test_browser import (GRADE_MS, RUN_CELL_MS, START_MS, VIEWPORT, browser, confirm,
                          formgrader_row, run_all_cells)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="pip install playwright (the course's test extra) to run the hub's browser test")
if os.geteuid() != 0:
    pytest.skip("the hub test creates Unix users and starts JupyterHub (make hub): run it as root",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
HUB = ROOT / "deploy" / "hub"
# setup.sh's defaults, which the test does not change.
HUB_URL = "http://127.0.0.1:8000"
STATE = Path("/srv/jupyterhub")
EXCHANGE = Path("/srv/nbgrader/exchange")
INSTRUCTOR = "instructor"
COURSE = Path("/home") / INSTRUCTOR / "course"
COURSE_ID = "pytorch-training-loop"
# setup.sh's exit status when something the hub needs cannot be installed.
MISSING_PREREQUISITE = 3
LESSON = "05_zero_grad"
NOTEBOOK = f"{LESSON}/{LESSON}.ipynb"
with (HUB / "roster.csv").open(newline="") as _roster:
    HONEST, FORGETFUL, HOSTILE = [row["id"] for row in csv.DictReader(_roster)][:3]
# The forgetful student's train_step never clears the gradients.
NO_ZERO_GRAD = BUGS["bea"]["train_step"]
SNOOP_PREFIX = "SNOOPED"
# Paths a student's server must not serve from outside the student's home; some as a browser
# would send them, some raw (http.client keeps dot segments the proxy and server then see).
ESCAPES = ["..", "../..", f"../{INSTRUCTOR}/course", f"../{HONEST}", f"..%2F{INSTRUCTOR}%2Fcourse",
           f"%2E%2E/{HONEST}", f"/home/{INSTRUCTOR}/course", f"%2Fhome%2F{HONEST}",
           f"{EXCHANGE}/{COURSE_ID}/inbound", f"..%2F..%2Fsrv%2Fnbgrader%2Fexchange%2F{COURSE_ID}"]


def hostile_code(victim: str) -> str:
    """Code appended to an answer cell: it lists and reads what it should never see, and prints
    what it got (the file's first bytes, or the error's name)."""
    course = f"/home/{INSTRUCTOR}/course"
    inbound = f"{EXCHANGE}/{COURSE_ID}/inbound"
    return f'''

import os as _os
for _folder in [{course!r}, {course + "/solutions/" + LESSON!r}, "/home/{victim}", {inbound!r}]:
    try:
        _names = sorted(_os.listdir(_folder))
    except OSError as _error:
        _names = []
        print("{SNOOP_PREFIX} list", _folder, type(_error).__name__)
    else:
        print("{SNOOP_PREFIX} list", _folder, _names)
    for _path in [_os.path.join(_folder, _name) for _name in _names] + [
            {course + "/canary.txt"!r}, {course + "/gradebook.db"!r}, "/home/{victim}/canary.txt",
            "/home/{victim}/{NOTEBOOK}"]:
        try:
            with open(_path, "rb") as _file:
                print("{SNOOP_PREFIX} read", _path, _file.read(300))
        except OSError as _error:
            print("{SNOOP_PREFIX} read", _path, type(_error).__name__)
'''


@dataclass
class Hub:
    """The running hub and the demo password every account logs in with."""

    url: str
    password: str


@dataclass
class Session:
    """One user logged in to the hub, with their JupyterLab open."""

    name: str
    page: sync_api.Page

    @property
    def server(self) -> str:
        return f"{HUB_URL}/user/{self.name}"

    def api(self, method: str, path: str, data: Any = None) -> Any:
        """A request to the user's own server, authenticated as the browser is."""
        xsrf = next(cookie["value"] for cookie in self.page.context.cookies(f"{self.server}/")
                    if cookie["name"] == "_xsrf")
        response = self.page.context.request.fetch(
            f"{self.server}/{path}", method=method, headers={"X-XSRFToken": xsrf},
            data=None if data is None else json.dumps(data), timeout=GRADE_MS)
        assert response.ok, f"{method} {path}: {response.status} {response.text()[:2000]}"
        return response.json()

    def raw_get(self, path: str) -> tuple[int, str]:
        """GET ``path`` under the user's server exactly as written (no URL normalisation)."""
        cookies = "; ".join(f"{c['name']}={c['value']}"
                            for c in self.page.context.cookies(f"{self.server}/"))
        connection = http.client.HTTPConnection(urllib.parse.urlsplit(HUB_URL).netloc, timeout=30)
        try:
            connection.request("GET", f"/user/{self.name}/{path}", headers={"Cookie": cookies})
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def read_notebook(self) -> nbformat.NotebookNode:
        model = self.api("GET", f"api/contents/{NOTEBOOK}?content=1")
        return nbformat.from_dict(model["content"])

    def write_notebook(self, notebook: nbformat.NotebookNode) -> None:
        self.api("PUT", f"api/contents/{NOTEBOOK}",
                 {"type": "notebook", "format": "json", "content": notebook})

    def shot(self, name: str) -> None:
        self.page.screenshot(path=ARTIFACTS / f"hub_{self.name}_{name}.png")


def _as_user(user: str, path: Path, text: str) -> None:
    """Writes a file owned by ``user``, readable by all: only its folders' modes protect it."""
    path.write_text(text)
    shutil.chown(path, user, user)
    path.chmod(0o644)


def _start_afresh() -> None:
    """Removes what earlier runs left of the lesson: the students' copies, the course's
    submissions and feedback, and the course's exchange."""
    for student in (HONEST, FORGETFUL, HOSTILE):
        shutil.rmtree(Path("/home") / student / LESSON, ignore_errors=True)
        for folder in ("submitted", "autograded", "feedback"):
            shutil.rmtree(COURSE / folder / student / LESSON, ignore_errors=True)
        # JupyterLab would reopen the last run's tabs.
        shutil.rmtree(Path("/home") / student / ".jupyter" / "lab" / "workspaces",
                      ignore_errors=True)
    shutil.rmtree(EXCHANGE / COURSE_ID, ignore_errors=True)
    runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin")
    removed = subprocess.run(
        [runuser, "-u", INSTRUCTOR, "--", "/opt/course-hub/bin/nbgrader", "db", "assignment",
         "remove", LESSON, "--force", "--log-level=ERROR"],
        cwd=COURSE, capture_output=True, text=True, timeout=120,
        env={"PATH": "/opt/course-hub/bin:/usr/bin:/bin", "HOME": f"/home/{INSTRUCTOR}",
             "COURSE_EXCHANGE": str(EXCHANGE)})
    assert removed.returncode == 0 or "No such assignment" in removed.stderr, removed.stderr


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """The hub `make hub` starts (stopped afterwards if the test started it)."""
    pid_file = STATE / "jupyterhub.pid"
    was_running = pid_file.exists() and Path(f"/proc/{pid_file.read_text().strip()}").exists()
    started = subprocess.run(["make", "-s", "hub"], cwd=ROOT, capture_output=True, text=True,
                             timeout=1800)
    if started.returncode == MISSING_PREREQUISITE or "cannot install" in started.stderr:
        pytest.skip(f"make hub could not install what the hub needs: {started.stderr[-500:]}")
    assert started.returncode == 0, f"make hub failed:\n{started.stdout[-2000:]}{started.stderr}"
    ARTIFACTS.mkdir(exist_ok=True)
    _start_afresh()
    try:
        yield Hub(HUB_URL, (STATE / "password").read_text().strip())
    finally:
        shutil.copyfile(STATE / "jupyterhub.log", ARTIFACTS / "jupyterhub.log")
        if not was_running:
            subprocess.run(["make", "-s", "hub-stop"], cwd=ROOT, timeout=120)


@pytest.fixture
def log_in(hub: Hub, browser: sync_api.Browser) -> Iterator[Callable[[str], Session]]:
    """Logs a user in, in a browser of their own; the hub starts their server, which opens
    JupyterLab (not awaited). What each shows at the end is saved as ``hub_<name>_final.png``."""
    sessions: list[Session] = []

    def log_in_as(name: str) -> Session:
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.goto(f"{hub.url}/hub/login")
        page.locator("#username_input").fill(name)
        page.locator("#password_input").fill(hub.password)
        page.locator("#login_submit").click()
        sessions.append(Session(name, page))
        return sessions[-1]

    yield log_in_as
    for session in sessions:
        with contextlib.suppress(sync_api.Error):
            session.shot("final")
        session.page.context.close()


def wait_for_lab(session: Session) -> None:
    """Waits until the user's server has started and JupyterLab shows its menus."""
    session.page.wait_for_url(re.compile(rf"/user/{session.name}/lab"), timeout=START_MS)
    session.page.get_by_role("menuitem", name="Nbgrader", exact=True).wait_for(timeout=START_MS)


def open_assignment_list(session: Session, absent: str | None = None) -> None:
    """Opens the Assignment List from the Nbgrader menu of the JupyterLab on screen, checking
    first that the menu has no item ``absent``."""
    session.page.get_by_role("menuitem", name="Nbgrader", exact=True).click(timeout=START_MS)
    if absent:
        sync_api.expect(session.page.get_by_role("menuitem", name=absent, exact=True)
                        ).to_have_count(0)
    session.page.get_by_role("menuitem", name="Assignment List", exact=True).click()


def open_formgrader(session: Session) -> sync_api.Page:
    """The Formgrader at its own address (the Nbgrader menu shows the same page in a frame)."""
    session.page.goto(f"{session.server}/formgrader")
    return session.page


def assignment_list_button(session: Session, section: str, label: str) -> sync_api.Locator:
    """The lesson's button in one section (released, fetched, submitted) of the Assignment List."""
    rows = session.page.locator(f"#{section}_assignments_list")
    button = rows.get_by_role("button", name=label, exact=True)
    sync_api.expect(button).to_have_count(1, timeout=START_MS)
    return button


def open_notebook(session: Session) -> sync_api.Locator:
    """Opens the lesson in JupyterLab, waits until its kernel is ready, returns its panel."""
    session.page.goto(f"{session.server}/lab/tree/{NOTEBOOK}?reset")
    notebook = session.page.locator(".jp-NotebookPanel")
    sync_api.expect(notebook).to_have_count(1, timeout=START_MS)
    session.page.locator(".jp-StatusBar-TextItem",
                         has_text=re.compile(r"^(?!No Kernel).+ \| Idle$")).wait_for(
        timeout=START_MS)
    return notebook


def check_validation(session: Session, expected: list[str]) -> None:
    """Waits for the result of Validate and checks the dialog says each of ``expected``."""
    dialog = session.page.locator(".jp-Dialog")
    sync_api.expect(dialog).to_contain_text("Validation Results", timeout=RUN_CELL_MS)
    for text in expected:
        sync_api.expect(dialog).to_contain_text(text)
    session.shot("validate")
    dialog.get_by_role("button", name="Ok").click()


def fetch_and_answer(session: Session, secret: str) -> sync_api.Locator:
    """The student fetches the lesson from the Assignment List, writes their answers into it,
    and opens it; returns the notebook's panel."""
    wait_for_lab(session)
    # Students' servers have no Formgrader, neither in the menu nor on the server.
    assert session.raw_get("formgrader")[0] == 404
    open_assignment_list(session, absent="Formgrader")
    assignment_list_button(session, "released", "Fetch").click()
    assignment_list_button(session, "fetched", "Submit")
    session.shot("fetched")

    notebook = fill_answers(session.read_notebook(), answer(session.name))
    first_answer = next(cell for cell in notebook.cells
                        if cell.cell_type == "code" and "def train_step" in cell.source)
    if session.name == HONEST:
        # A line of her hand-in the hostile student must not see in the exchange.
        first_answer.source += f"\n# {secret}\n"
    if session.name == HOSTILE:
        first_answer.source += hostile_code(HONEST)
    session.write_notebook(notebook)
    return open_notebook(session)


def answer(student: str) -> dict[str, str]:
    """The student's answers by grade id."""
    answers = solution_answers(ROOT, LESSON)
    if student == FORGETFUL:
        return with_bugs(answers, [NO_ZERO_GRAD])
    return answers


def feedback_html(session: Session) -> str:
    """The feedback page the student fetched (one per hand-in)."""
    folder = session.api("GET", f"api/contents/{LESSON}/feedback?content=1")["content"]
    assert len(folder) == 1, folder
    path = f"{folder[0]['path']}/{LESSON}.html"
    return session.api("GET", f"api/contents/{path}?content=1&type=file&format=text")["content"]


def test_class_on_the_hub(log_in: Callable[[str], Session]) -> None:
    secret = secrets.token_hex(16)
    _as_user(INSTRUCTOR, COURSE / "canary.txt", secret)
    _as_user(HONEST, Path("/home") / HONEST / "canary.txt", secret)

    # All four log in at once: the hub starts their servers side by side.
    instructor = log_in(INSTRUCTOR)
    students = {name: log_in(name) for name in (HONEST, FORGETFUL, HOSTILE)}
    wait_for_lab(instructor)

    # The instructor's Nbgrader menu offers the Formgrader; it opens on a page of its own here.
    instructor.page.get_by_role("menuitem", name="Nbgrader", exact=True).click()
    sync_api.expect(instructor.page.get_by_role("menuitem", name="Formgrader", exact=True)
                    ).to_have_count(1)
    frame = open_formgrader(instructor)
    sync_api.expect(frame.locator("#warning-exchange")).to_have_count(0)
    # The instructor generates and releases the lesson.
    formgrader_row(frame, LESSON).locator(".assign a").click()
    confirm(frame, "created the student version")
    formgrader_row(frame, LESSON).locator(".release a").click()
    confirm(frame, "released")
    instructor.shot("released")

    # The honest and the forgetful student answer and validate side by side, then hand in;
    # the hostile student comes last, when their hand-ins lie in the exchange.
    for group in ([HONEST, FORGETFUL], [HOSTILE]):
        panels = {name: fetch_and_answer(students[name], secret) for name in group}
        if HOSTILE in group:
            # It runs its notebook in its own server, as its own Unix user (Validate saves it).
            run_all_cells(students[HOSTILE].page)
            students[HOSTILE].shot("snooped")
        for panel in panels.values():
            panel.locator(".jp-NotebookPanel-toolbar .validate-button").click()
        for name in group:
            expected = (["The following cell failed", "no_zero_grad"] if name == FORGETFUL
                        else ["Success! Your notebook passes all the tests."])
            check_validation(students[name], expected)
            open_assignment_list(students[name])
            assignment_list_button(students[name], "fetched", "Submit").click()
            assignment_list_button(students[name], "submitted", "Fetch Feedback")
            students[name].shot("submitted")

    # What the hostile student's own server (running as that student) let it read.
    snooped = [line for cell in students[HOSTILE].read_notebook().cells
               if cell.cell_type == "code" for output in cell.get("outputs", [])
               for line in output.get("text", "").splitlines() if line.startswith(SNOOP_PREFIX)]
    assert any("PermissionError" in line for line in snooped), snooped
    assert secret not in json.dumps(students[HOSTILE].read_notebook())
    print("\n".join(["The hostile student's own kernel:", *snooped]))

    # Nor may a student's server serve anything outside its user's home.
    for path in ESCAPES:
        status, body = students[HOSTILE].raw_get(f"api/contents/{path}")
        assert status != 200 and secret not in body, (path, status, body[:500])
        print(f"GET /user/{HOSTILE}/api/contents/{path}: {status}")
    assert students[HOSTILE].raw_get(f"api/contents/{LESSON}")[0] == 200

    # The instructor collects, autogrades each hand-in, and releases the feedback.
    frame = open_formgrader(instructor)
    formgrader_row(frame, LESSON).locator(".collect a").click()
    confirm(frame, "collected submissions")
    formgrader_row(frame, LESSON).locator(".num-submissions a").click()
    for name in students:
        formgrader_row(frame, name).locator(".autograde a").click()
        confirm(frame, "autograded", timeout=GRADE_MS)
    instructor.shot("autograded")
    scores = {row["student"]: (row["score"], row["max_score"])
              for row in instructor.api("GET", f"formgrader/api/submissions/{LESSON}")}
    full = scores[HONEST][1]
    assert full > 0 and scores[HONEST] == scores[HOSTILE] == (full, full), scores
    assert 0 < scores[FORGETFUL][0] < full, scores
    frame.get_by_role("link", name="Manage Assignments", exact=True).click()
    formgrader_row(frame, LESSON).locator(".generate-feedback a").click()
    confirm(frame, "generated feedback", timeout=GRADE_MS)
    formgrader_row(frame, LESSON).locator(".release-feedback a").click()
    confirm(frame, "released feedback")
    instructor.shot("feedback_released")

    # Each student fetches their feedback and reads the graders' diagnosis there.
    pages = {}
    for name, session in students.items():
        open_assignment_list(session)
        assignment_list_button(session, "submitted", "Fetch Feedback").click()
        sync_api.expect(session.page.locator("#submitted_assignments_list")).to_contain_text(
            "view feedback", timeout=START_MS)
        pages[name] = feedback_html(session)
        session.page.goto(f"{session.server}/files/{LESSON}/feedback/"
                          + session.api("GET", f"api/contents/{LESSON}/feedback")["content"][0]
                          ["name"] + f"/{LESSON}.html")
        session.shot("feedback")
    assert "no_zero_grad" in pages[FORGETFUL] and "no_zero_grad" not in pages[HONEST]
    # In the sandbox the hostile answer found nothing at all, and its page shows what it got.
    graded_snoops = re.findall(rf"{SNOOP_PREFIX} (?:list|read) /[^\n<]*", pages[HOSTILE])
    assert graded_snoops and secret not in pages[HOSTILE], graded_snoops
    print("\n".join(["The hostile student's autograded notebook:", *graded_snoops]))
