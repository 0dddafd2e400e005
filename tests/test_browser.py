"""JupyterLab in headless Chromium: what a student sees when running lessons and check cells."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nbformat
import pytest
from simulated_class import BUGS, buggy, run_nbgrader

from course_utils.autograde.gradebook import course_config, course_lessons
from course_utils.autograde.environment import nbgrader_environment

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="pip install playwright (the course's test extra) to run the JupyterLab browser test")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("apt-get install chromium to run the JupyterLab browser test",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# The lesson whose training cell draws live curves under a progress bar, run as a whole.
TRAINING_LESSON = "solutions/08_mnist/08_mnist.ipynb"
# The student version of the lesson where a buggy answer gets typed in and checked.
EXERCISE_LESSON = "notebooks/06_epoch_loss/06_epoch_loss.ipynb"
# A classic mistake: the loss of the last batch reported as the epoch's loss.
LAST_BATCH_LOSS_ANSWER = BUGS["bea"]["train_one_epoch"].source.lstrip()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run"]
# Tall enough that a training cell with its outputs fits into one screenshot.
VIEWPORT = {"width": 1400, "height": 1800}
KERNEL_IDLE = re.compile(r"^(?!No Kernel).+ \| Idle$")
# Waits, in milliseconds, generous because the machine may be shared with other jobs.
START_MS = 120_000
RUN_NOTEBOOK_MS = 480_000
RUN_CELL_MS = 180_000
# Not copied into the server's course folder: environment, history, data (the notebooks read
# it through the installed package) and what earlier runs and grading left behind, so that
# the copy starts as a fresh clone does.
NOT_COURSE = shutil.ignore_patterns(".venv", ".git", "data", "test-artifacts", ".pytest_cache",
                                    "__pycache__", ".ipynb_checkpoints", "*.egg-info",
                                    "gradebook.db", "exchange", "submitted", "autograded",
                                    "feedback", "mistakes", "grades.csv")
# The student lesson whose setup cell a scratch notebook reuses, and a loop written there that
# forgets zero_grad (the setup cell defines x, y and loss_fn).
DOCTOR_LESSON = "notebooks/05_zero_grad/05_zero_grad.ipynb"
NO_ZERO_GRAD_LOOP = """\
model = nn.Linear(10, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(20):
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
print(f"loss after 20 steps: {loss.item():.4f}")"""
# The instructor's lesson in the Formgrader, and the student whose notebook is graded there:
# bea forgets zero_grad in train_step, one of the lesson's two exercises.
GRADED_LESSON = "05_zero_grad"
STUDENT = {"id": "bea", "first_name": "Bea", "last_name": "Okafor"}
GRADE_MS = 300_000
# User settings of the throwaway JupyterLab profile: no pop-up asking to fetch news.
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false"}}


@dataclass
class JupyterLab:
    """A JupyterLab server on a throwaway copy of the course."""

    url: str
    token: str
    course: Path

    def notebook_url(self, path: str) -> str:
        """The address that opens ``path`` (relative to the course folder) alone in JupyterLab.

        ``reset`` starts from an empty workspace instead of reopening earlier tabs.
        """
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def _request(url: str, token: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(url, method=method,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def _isolated_jupyter_env(home: Path) -> dict[str, str]:
    """The server's environment: the course's venv first on PATH, Jupyter state under ``home``."""
    env = nbgrader_environment()
    # A student's kernel draws inline figures; a backend forced by the test run would not.
    env.pop("MPLBACKEND", None)
    for variable in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[variable] = str(home / variable.lower())
    user_settings = Path(env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings"
    for plugin, settings in LAB_SETTINGS.items():
        path = user_settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    return env


def _wait_until_answering(process: subprocess.Popen, url: str, token: str, log: Path) -> None:
    deadline = time.monotonic() + START_MS / 1000
    while time.monotonic() < deadline:
        assert process.poll() is None, f"JupyterLab exited at start:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(OSError):
            _request(f"{url}/api/status", token)
            return
        time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer within {START_MS // 1000} s:\n"
                         f"{log.read_text()[-3000:]}")


def _kernel_ports(runtime_dir: Path) -> list[tuple[str, int]]:
    """The ports of the running kernels, from their connection files."""
    ports = []
    for path in runtime_dir.glob("kernel-*.json"):
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(path.read_text())
            ports += [(info["ip"], info[key]) for key in info if key.endswith("_port")]
    return ports


def _stop(process: subprocess.Popen, url: str, token: str) -> None:
    """Shuts the server and its kernels down, then kills whatever is left of its process group."""
    with contextlib.suppress(OSError):
        _request(f"{url}/api/shutdown", token, method="POST")
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Helpers the server started (language-server probes, ...) share its process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """JupyterLab from the course's environment, serving a copy of the course on a free port."""
    home = tmp_path_factory.mktemp("jupyterlab")
    course = home / "course"
    shutil.copytree(ROOT, course, ignore=NOT_COURSE)
    ARTIFACTS.mkdir(exist_ok=True)
    env = _isolated_jupyter_env(home)
    port, token = _free_port(), secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}"
    log = home / "jupyterlab.log"
    ports = [("127.0.0.1", port)]
    # What `make course` does before starting JupyterLab: a gradebook with every lesson's points.
    prepared = subprocess.run([sys.executable, "-m", "course_utils.autograde.gradebook",
                               str(course)], env=env, capture_output=True, text=True, timeout=600)
    assert prepared.returncode == 0, f"preparing the gradebook failed:\n{prepared.stderr}"
    with log.open("w") as log_file:
        # cwd: nbgrader's Validate reads nbgrader_config.py from the server's folder.
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
             "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
             f"--ServerApp.token={token}", f"--ServerApp.root_dir={course}"],
            cwd=course, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        _wait_until_answering(process, url, token, log)
        yield JupyterLab(url, token, course)
    finally:
        ports += _kernel_ports(Path(env["JUPYTER_RUNTIME_DIR"]))
        _stop(process, url, token)
        shutil.copyfile(log, ARTIFACTS / "jupyterlab.log")
    # Kernels run in sessions of their own; the server shuts them down, give them a moment.
    deadline = time.monotonic() + 15
    while any(_port_open(*p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.5)
    still_open = [p for p in ports if _port_open(*p)]
    assert not still_open, f"ports still open after JupyterLab shut down: {still_open}"


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: sync_api.Browser, request: pytest.FixtureRequest) -> Iterator[sync_api.Page]:
    """A fresh browser tab; what it shows at the end is saved as ``<test>-final.png``."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    try:
        yield tab
    finally:
        with contextlib.suppress(sync_api.Error):
            tab.screenshot(path=ARTIFACTS / f"{request.node.name}-final.png")
        context.close()


def open_notebook(page: sync_api.Page, lab: JupyterLab, path: str) -> sync_api.Locator:
    """Opens a notebook, waits until its kernel is ready, and returns its panel."""
    assert (lab.course / path).is_file(), f"{path} is missing"
    page.goto(lab.notebook_url(path))
    notebook = page.locator(".jp-NotebookPanel")
    sync_api.expect(notebook).to_have_count(1, timeout=START_MS)
    notebook.locator(".jp-Cell").first.wait_for(timeout=START_MS)
    # The status bar reads "Python 3 (ipykernel) | Idle" once connected ("No Kernel" before).
    page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE).wait_for(timeout=START_MS)
    return notebook


def run_all_cells(page: sync_api.Page) -> None:
    """Clears the saved outputs, runs all cells, and waits until none is queued or running.

    JupyterLab stops at the first cell that raises, as it does for a student.
    """
    # Solutions keep their outputs for the regression tests: start from a clean page.
    page.get_by_role("menuitem", name="Edit", exact=True).click()
    page.get_by_role("menuitem", name="Clear Outputs of All Cells", exact=True).click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    busy = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]" \
           ".some(prompt => prompt.textContent.includes('[*]'))"
    page.wait_for_function(f"() => {busy}", timeout=RUN_CELL_MS)
    page.wait_for_function(f"() => !({busy})", timeout=RUN_NOTEBOOK_MS)


def code_cell(notebook: sync_api.Locator, source_text: str) -> sync_api.Locator:
    """The one code cell whose source contains ``source_text``, scrolled into view."""
    cell = notebook.locator(".jp-CodeCell").filter(
        has=notebook.page.locator(".jp-InputArea", has_text=source_text))
    sync_api.expect(cell).to_have_count(1)
    cell.scroll_into_view_if_needed()
    return cell


def test_training_cell_shows_live_curves_and_progress_bar(lab: JupyterLab,
                                                          page: sync_api.Page) -> None:
    notebook = open_notebook(page, lab, TRAINING_LESSON)
    run_all_cells(page)

    # Text content, not inner text: cells scrolled out of view are not rendered.
    prompts = [p.strip() for p in
               notebook.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()]
    failures = notebook.locator(".jp-OutputArea-output", has_text="Traceback").all_text_contents()
    assert prompts == [f"[{n}]:" for n in range(1, len(prompts) + 1)] and not failures, (
        f"not every cell ran, in order and without error ({prompts}):\n" + "\n".join(failures))

    training = code_cell(notebook, "LivePlot(")
    # LivePlot redraws one image in place after every epoch.
    curves = training.locator(".jp-OutputArea-output img")
    sync_api.expect(curves).to_have_count(1)
    assert curves.evaluate("image => image.complete && image.naturalWidth") > 0, \
        "the live plot's image did not decode"
    # tqdm.auto draws a widget: a label, the bar, then counts; "epochs: 100%" once done.
    progress = training.locator(".jp-OutputArea-output .widget-hbox",
                                has=page.locator(".widget-hprogress"))
    sync_api.expect(progress.first).to_be_visible()
    for bar in progress.all():
        sync_api.expect(bar).to_contain_text("100%")

    training.screenshot(path=ARTIFACTS / "08_mnist_training_cell.png")
    page.screenshot(path=ARTIFACTS / "08_mnist_jupyterlab.png")


def test_check_cell_and_validate_explain_a_buggy_answer(lab: JupyterLab,
                                                         page: sync_api.Page) -> None:
    notebook = open_notebook(page, lab, EXERCISE_LESSON)
    answer = code_cell(notebook, "def train_one_epoch")
    answer.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    # Inserted as one piece of text, so the editor adds no indentation or brackets of its own.
    page.keyboard.insert_text(LAST_BATCH_LOSS_ANSWER)
    sync_api.expect(answer.locator(".cm-content")).to_contain_text("return loss.item()")
    sync_api.expect(answer.locator(".cm-content")).not_to_contain_text("NotImplementedError")

    run_all_cells(page)
    check = code_cell(notebook, 'check("train_one_epoch", train_one_epoch)')
    report = check.locator(".jp-OutputArea-output", has_text="Not yet")
    sync_api.expect(report).to_contain_text("returns_last_batch_loss")
    sync_api.expect(report).to_contain_text("last batch")
    # check() raises, so Run All stopped here, as it does for the student: one short line
    # under the report, no traceback into the graders.
    error = check.locator(".jp-OutputArea-output", has_text="CheckFailed").first
    sync_api.expect(error).to_contain_text("explained above")
    sync_api.expect(error).not_to_contain_text("course_utils")
    check.screenshot(path=ARTIFACTS / "06_epoch_loss_check_cell.png")

    # nbgrader's Validate button saves the notebook and runs it on the server.
    notebook.locator(".jp-NotebookPanel-toolbar .validate-button").click()
    dialog = page.locator(".jp-Dialog")
    sync_api.expect(dialog).to_contain_text("Validation Results", timeout=RUN_CELL_MS)
    # It names the graded cell that did not get full marks, the exercise and the diagnosis.
    sync_api.expect(dialog).to_contain_text("The following cell failed")
    sync_api.expect(dialog).to_contain_text("`train_one_epoch` earns")
    sync_api.expect(dialog).to_contain_text("returns_last_batch_loss")
    page.screenshot(path=ARTIFACTS / "06_epoch_loss_validate.png")
    dialog.get_by_role("button", name="Ok").click()


def test_loop_doctor_names_a_forgotten_zero_grad(lab: JupyterLab, page: sync_api.Page) -> None:
    # A scratch notebook beside a student's lesson: its setup cell, then a loop of their own.
    lesson = nbformat.read(lab.course / DOCTOR_LESSON, as_version=4)
    setup = next(cell for cell in lesson.cells if cell.cell_type == "code")
    assert "%load_ext course_utils.doctor" in setup.source, "the setup cell loads the doctor"
    scratch = nbformat.v4.new_notebook(metadata=lesson.metadata, cells=[
        nbformat.v4.new_code_cell(setup.source), nbformat.v4.new_code_cell(NO_ZERO_GRAD_LOOP)])
    nbformat.write(scratch, (lab.course / DOCTOR_LESSON).with_name("scratch.ipynb"))

    notebook = open_notebook(page, lab, str(Path(DOCTOR_LESSON).with_name("scratch.ipynb")))
    run_all_cells(page)
    loop = code_cell(notebook, "optimizer.step()")
    report = loop.locator(".jp-OutputArea-output", has_text="Loop doctor")
    # Named once, with its code, the evidence and what to change.
    sync_api.expect(report).to_have_count(1)
    sync_api.expect(report).to_contain_text("no_zero_grad")
    sync_api.expect(report).to_contain_text("still held the previous step's")
    sync_api.expect(report).to_contain_text("optimizer.zero_grad()")
    sync_api.expect(report.locator("code[title]", has_text="no_zero_grad")).to_have_attribute(
        "title", "gradients never cleared, so they accumulate across steps")
    # Loading it shows nothing.
    setup_outputs = code_cell(notebook, "%load_ext").locator(".jp-OutputArea-output")
    sync_api.expect(setup_outputs.filter(has_text="doctor")).to_have_count(0)
    loop.screenshot(path=ARTIFACTS / "doctor_finding.png")


def open_formgrader(page: sync_api.Page, lab: JupyterLab) -> sync_api.FrameLocator:
    """Opens the Formgrader from JupyterLab's Nbgrader menu and returns its frame."""
    page.goto(f"{lab.url}/lab?reset&token={lab.token}")
    page.get_by_role("menuitem", name="Nbgrader", exact=True).click(timeout=START_MS)
    page.get_by_role("menuitem", name="Formgrader", exact=True).click()
    # The file browser takes room the Formgrader's wide tables need.
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
    return page.frame_locator(".jp-MainAreaWidget iframe")


def formgrader_row(frame: sync_api.FrameLocator, text: str) -> sync_api.Locator:
    """The one row of the Formgrader's table that contains ``text``."""
    row = frame.locator("#main-table tr", has_text=text)
    sync_api.expect(row).to_have_count(1, timeout=START_MS)
    return row


def confirm(frame: sync_api.FrameLocator, action: str, timeout: int = RUN_CELL_MS,
            screenshot: str | None = None) -> None:
    """Waits for the Formgrader's report on ``action``, requires success, and closes it;
    ``screenshot`` names a picture of the page with the report open."""
    dialog = frame.locator(".modal.in, .modal.show").first
    sync_api.expect(dialog).to_be_visible(timeout=timeout)
    sync_api.expect(dialog).to_contain_text(f"Successfully {action}")
    if screenshot:
        # Once it has faded in and slid into place.
        sync_api.expect(dialog).to_have_css("opacity", "1")
        sync_api.expect(dialog.locator(".modal-dialog")).to_have_css(
            "transform", "matrix(1, 0, 0, 1, 0, 0)")
        dialog.page.screenshot(path=ARTIFACTS / screenshot)
    dialog.get_by_role("button", name="OK").click()
    # The dialog fades out; screenshots wait until its shadow is gone too.
    sync_api.expect(frame.locator(".modal-backdrop")).to_have_count(0)


def student_nbgrader(course: Path, folder: Path, *args: str) -> str:
    """Runs a student's nbgrader command in ``folder`` on this machine, through the course's
    exchange (a student has no course configuration of their own), and returns its log."""
    config = course_config(course)
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, f"--course={config.CourseDirectory.course_id}",
         f"--Exchange.root={config.Exchange.root}"],
        cwd=folder, env=nbgrader_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stderr}"
    return result.stderr


def test_instructor_grades_a_lesson_in_the_formgrader(lab: JupyterLab, page: sync_api.Page,
                                                       tmp_path: Path) -> None:
    lesson, student = GRADED_LESSON, STUDENT["id"]
    added = run_nbgrader(lab.course, "db", "student", "add", student,
                         f"--first-name={STUDENT['first_name']}",
                         f"--last-name={STUDENT['last_name']}")
    assert added.returncode == 0, added.stderr

    frame = open_formgrader(page, lab)
    lessons = course_lessons(lab.course)
    sync_api.expect(frame.locator("#main-table tr")).to_have_count(len(lessons), timeout=START_MS)
    # The course's exchange exists, so no warning about it.
    sync_api.expect(frame.locator("#warning-exchange")).to_have_count(0)
    formgrader_row(frame, lesson).locator(".assign a").click()
    confirm(frame, "created the student version")
    formgrader_row(frame, lesson).locator(".release a").click()
    confirm(frame, "released")
    page.screenshot(path=ARTIFACTS / "formgrader_assignments.png")

    # The student, on the same machine, fetches the lesson, makes her mistake, and hands it in.
    student_nbgrader(lab.course, tmp_path, "fetch_assignment", lesson)
    fetched = tmp_path / lesson / f"{lesson}.ipynb"
    assert fetched.is_file()
    fetched.write_text(buggy(student)(lab.course, lesson))
    student_nbgrader(lab.course, tmp_path, "submit", lesson, f"--student={student}")

    formgrader_row(frame, lesson).locator(".collect a").click()
    confirm(frame, "collected submissions")
    formgrader_row(frame, lesson).locator(".num-submissions a").click()
    row = formgrader_row(frame, student)
    sync_api.expect(row.locator(".student-name")).to_have_text(
        f"{STUDENT['last_name']}, {STUDENT['first_name']}")
    row.locator(".autograde a").click()
    confirm(frame, "autograded", timeout=GRADE_MS)
    # Partial credit: bea's train_step keeps its gradients, her accumulation_step is right.
    sync_api.expect(formgrader_row(frame, student).locator(".score")).to_have_text(
        re.compile(r"^[0-9.]+ / [1-9]"))
    page.screenshot(path=ARTIFACTS / "formgrader_submissions.png")

    # Every lesson is listed with its points, none as "0 / 0".
    frame.get_by_role("link", name="Manual Grading", exact=True).click()
    for name in lessons:
        sync_api.expect(formgrader_row(frame, name).locator(".score")).to_have_text(
            re.compile(r"^[0-9.]+ / [1-9]"))
    # The manual-grading view of the submission shows the graders' diagnosis in its test cell.
    formgrader_row(frame, lesson).locator(".name a").click()
    sync_api.expect(frame.locator("#main-table .avg-score")).to_have_count(1)
    formgrader_row(frame, lesson).locator(".name a").click()
    frame.locator("#main-table a.name-hidden").click()
    diagnosis = frame.locator("#notebook-container").get_by_text("no_zero_grad").first
    sync_api.expect(diagnosis).to_be_visible(timeout=START_MS)
    diagnosis.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "formgrader_manual_grading.png")

    # Back through the breadcrumb, as the grading view has no sidebar.
    frame.get_by_role("link", name="Manual Grading", exact=True).click()
    frame.get_by_role("link", name="Manage Assignments", exact=True).click()
    formgrader_row(frame, lesson).locator(".generate-feedback a").click()
    confirm(frame, "generated feedback", timeout=GRADE_MS)
    formgrader_row(frame, lesson).locator(".release-feedback a").click()
    confirm(frame, "released feedback", screenshot="formgrader_feedback_released.png")

    # The student fetches the same page the instructor generated.
    student_nbgrader(lab.course, tmp_path, "fetch_feedback", lesson, f"--student={student}")
    generated = lab.course / "feedback" / student / lesson / f"{lesson}.html"
    fetched_feedback = list((tmp_path / lesson / "feedback").glob(f"*/{lesson}.html"))
    assert [path.read_text() for path in fetched_feedback] == [generated.read_text()]
    assert "no_zero_grad" in generated.read_text()
    page.goto(fetched_feedback[0].as_uri())
    diagnosis = page.get_by_text("no_zero_grad").first
    diagnosis.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "feedback_page.png")
