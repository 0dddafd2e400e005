"""JupyterHub for the course on one machine: real Unix users, nbgrader's shared exchange."""

import csv
import os
from pathlib import Path

c = get_config()  # noqa: F821  (provided by JupyterHub when it loads this file)

# Set by setup.sh, which starts the hub.
VENV = Path(os.environ["COURSE_HUB_VENV"])
STATE = Path(os.environ["COURSE_HUB_STATE"])
INSTRUCTOR = os.environ["COURSE_HUB_INSTRUCTOR"]
with open(os.environ["COURSE_HUB_ROSTER"], newline="") as roster:
    STUDENTS = [row["id"] for row in csv.DictReader(roster)]

c.JupyterHub.bind_url = os.environ.get("COURSE_HUB_URL", "http://127.0.0.1:8000")
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.command = [os.environ.get("COURSE_HUB_PROXY", "configurable-http-proxy")]

# A demo: everyone on the roster logs in with one shared password (read from the state
# folder, which only root can read). For real use, log in with system passwords
# (c.JupyterHub.authenticator_class = "pam") or an identity provider (oauthenticator's
# GenericOAuthenticator, GitHubOAuthenticator, ...), keeping allowed_users and admin_users.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = (STATE / "password").read_text().strip()
c.Authenticator.allowed_users = {INSTRUCTOR, *STUDENTS}
c.Authenticator.admin_users = {INSTRUCTOR}

# Each server runs as its Unix user, from the course's environment, in JupyterLab.
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {
    # nbgrader starts alembic from PATH when it creates a gradebook.
    "PATH": f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
    "COURSE_EXCHANGE": os.environ["COURSE_EXCHANGE"],
    "COURSE_DATA_DIR": str(VENV / "data"),
}
# JupyterLab and a kernel importing torch start slowly on a small, shared machine.
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
