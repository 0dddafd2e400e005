"""nbgrader configuration: this folder is the course directory."""

import os

c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

# The lessons, in order (the tests read this list): every folder of solutions/ that holds its
# notebook, so that a new lesson is its folder and nothing else.
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "solutions")
LESSONS = sorted(name for name in (os.listdir(_SOURCE) if os.path.isdir(_SOURCE) else [])
                 if os.path.isfile(os.path.join(_SOURCE, name, f"{name}.ipynb")))

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "pytorch-training-loop"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"

# The stub students see in place of each solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# A whole notebook (08 trains on MNIST) needs more than the 30 s default per cell;
# the graders bound each call into student code themselves.
c.Execute.timeout = 180
c.Execute.interrupt_on_timeout = True

# nbgrader scores a test cell 0 if it wrote to stderr. The graders never do, but library
# code run in a test cell may still warn (Python warnings, or PyTorch's C++ "[W ...]" lines):
# such stderr outputs are dropped instead of costing the student the cell's points.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(?m)(Warning:|warnings\.warn\(|^\[W)"

# Put back test cells a student deleted, so they are graded rather than left ungraded.
# nbgrader's own add_missing_cells looks only at answer and test cells for the place to
# restore a cell and fails when a read-only check cell comes first, as in every lesson here.
c.OverwriteCells.add_missing_cells = True
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "course_utils.autograde.hidden_tests.RestoreCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# The exchange through which release_assignment, fetch_assignment, submit, collect,
# release_feedback and fetch_feedback pass files: a folder of the course (git-ignored), so that
# one machine works out of the box. nbgrader needs it to exist and be writable by everyone
# who hands in; like /tmp, the sticky bit stops users from removing each other's files.
# On a JupyterHub, every server is given the shared exchange in COURSE_EXCHANGE (deploy/hub/).
c.Exchange.root = os.environ.get("COURSE_EXCHANGE") or os.path.join(c.CourseDirectory.root,
                                                                    "exchange")
if not os.path.isdir(c.Exchange.root):
    try:
        os.makedirs(c.Exchange.root)
        os.chmod(c.Exchange.root, 0o1777)
    except OSError:
        pass  # a read-only copy of the course: nbgrader says the exchange is missing

# Validate (toolbar button and `nbgrader validate`) names the exercise and its first diagnosis
# for a test cell short of full points, where nbgrader alone says only "Partial credit".
# Validate's execution only: during autograding the added stderr would cost the cell's points.
from course_utils.autograde.validation import (append_last_cell,  # noqa: E402
                                               explain_after_last_cell)

c.Validator.Execute.on_notebook_start = append_last_cell
c.Validator.Execute.on_cell_start = explain_after_last_cell

# Student notebooks are untrusted code: each kernel runs in a sandbox
# (course_utils/autograde/kernels/policy.py: no course files but its own, no network, limited
# memory, processes, file sizes and CPU time).
# Autograding stops before grading anyone where the sandbox cannot start; only for notebooks
# you trust, grade unprotected with: c.Sandbox.enabled = False
# Before a submission is read, links, devices and pipes in its folder are removed unread
# (course_utils/autograde/submissions.py): nbgrader grades only the student's own files.
c.Autograde.pre_convert_hook = "course_utils.autograde.submissions.before_grading"
# A cell keeps at most 1 MB of output, a notebook 5 MB (course_utils/autograde/output_caps.py),
# and nothing a student's notebook shows can run in a browser (course_utils/autograde/sanitize.py:
# the Formgrader and the feedback pages render it in the instructor's session).
c.Autograde.autograde_preprocessors = [
    "course_utils.autograde.execute.SafeExecute",
    "course_utils.autograde.output_caps.CapOutput",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
    "course_utils.autograde.sanitize.SanitizeNotebook",
]
# Feedback pages show each check's report, never the hidden tests, and nothing active.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "course_utils.autograde.hidden_tests.HideHiddenTests",
    "course_utils.autograde.output_caps.CapOutput",
    "course_utils.autograde.sanitize.SanitizeNotebook",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
