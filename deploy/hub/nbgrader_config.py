"""nbgrader configuration every server on the hub reads (installed as /etc/jupyter/nbgrader_config.py)."""

import os

c = get_config()  # noqa: F821  (provided by nbgrader when it loads this file)

# Students have no course folder: these name the course and the exchange they hand in through.
# The instructor's course (nbgrader_config.py there) uses the same exchange, through the
# COURSE_EXCHANGE variable the hub gives every server.
c.CourseDirectory.course_id = "pytorch-training-loop"
c.Exchange.root = os.environ.get("COURSE_EXCHANGE", "/srv/nbgrader/exchange")

# Validate names the exercise and its first diagnosis, as in the course's own configuration.
from course_utils.autograde.validation import (append_last_cell,  # noqa: E402
                                               explain_after_last_cell)

c.Validator.Execute.on_notebook_start = append_last_cell
c.Validator.Execute.on_cell_start = explain_after_last_cell
