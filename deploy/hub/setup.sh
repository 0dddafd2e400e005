#!/usr/bin/env bash
# The course on a one-machine JupyterHub, as root: `setup.sh start` (make hub) installs what is
# missing, creates the users, the exchange and the instructor's course, and starts the hub;
# `setup.sh stop` (make hub-stop) stops it and every server it started. Both may run again.
# `setup.sh environment` only installs the course's environment for all users (COURSE_HUB_VENV).
set -euo pipefail

# useradd and runuser live in sbin, which a user's PATH may lack.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/deploy/hub
# Readable and executable by every user: students' servers run from it.
export COURSE_HUB_VENV=${COURSE_HUB_VENV:-/opt/course-hub}
# The hub's database, cookie secret, demo password and log: root's only.
export COURSE_HUB_STATE=${COURSE_HUB_STATE:-/srv/jupyterhub}
export COURSE_EXCHANGE=${COURSE_EXCHANGE:-/srv/nbgrader/exchange}
export COURSE_HUB_INSTRUCTOR=${COURSE_HUB_INSTRUCTOR:-instructor}
export COURSE_HUB_ROSTER=${COURSE_HUB_ROSTER:-$HERE/roster.csv}
export COURSE_HUB_URL=${COURSE_HUB_URL:-http://127.0.0.1:8000}
# Students' servers need a Python every user may run (root's own may be private).
BASE_PYTHON=${COURSE_HUB_PYTHON:-/usr/bin/python3}
JUPYTERHUB_VERSION="6.1.*"
COURSE=/home/$COURSE_HUB_INSTRUCTOR/course
PID_FILE=$COURSE_HUB_STATE/jupyterhub.pid
LOG=$COURSE_HUB_STATE/jupyterhub.log
# Exit status when something the hub needs cannot be installed (the hub test skips on it).
MISSING_PREREQUISITE=3

say() { echo "hub: $*"; }
missing() { echo "hub: cannot install $1" >&2; exit "$MISSING_PREREQUISITE"; }
as_instructor() {
    (cd "$COURSE" && runuser -u "$COURSE_HUB_INSTRUCTOR" -- env HOME="/home/$COURSE_HUB_INSTRUCTOR" \
        PATH="$COURSE_HUB_VENV/bin:/usr/bin:/bin" COURSE_EXCHANGE="$COURSE_EXCHANGE" \
        COURSE_DATA_DIR="$COURSE_HUB_VENV/data" "$@")
}

install_system_packages() {
    local wanted=()
    command -v node >/dev/null || wanted+=(nodejs)
    command -v npm >/dev/null || wanted+=(npm)
    command -v bwrap >/dev/null || wanted+=(bubblewrap)
    [ -x "$BASE_PYTHON" ] && "$BASE_PYTHON" -c "import venv, ensurepip" 2>/dev/null || wanted+=(python3-venv)
    if [ ${#wanted[@]} -gt 0 ]; then
        say "installing ${wanted[*]}"
        command -v apt-get >/dev/null || missing "${wanted[*]} (no apt-get)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wanted[@]}" >/dev/null; } \
            || missing "${wanted[*]}"
    fi
    if ! command -v configurable-http-proxy >/dev/null; then
        say "installing configurable-http-proxy"
        npm install --global --silent configurable-http-proxy >/dev/null || missing configurable-http-proxy
    fi
}

# The course's environment: JupyterHub, JupyterLab, nbgrader, torch and course_utils (a copy,
# not a link to this checkout), reinstalled only when the package changed.
install_environment() {
    # One installer at a time (the hub's test and the ordinary user's test may both ask): a
    # lock on this script, which leaves no file behind.
    exec 9<"$HERE/setup.sh"
    flock 9
    [ -x "$COURSE_HUB_VENV/bin/python" ] || "$BASE_PYTHON" -m venv "$COURSE_HUB_VENV" \
        || missing "a virtual environment in $COURSE_HUB_VENV"
    local stamp=$COURSE_HUB_VENV/.course-installed
    local version
    version=$(cd "$REPO" && cat pyproject.toml $(find course_utils -name '*.py' | sort) | sha256sum)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
        say "installing JupyterHub and the course into $COURSE_HUB_VENV (minutes the first time)"
        local build
        build=$(mktemp -d)
        # Built from a copy: pip would leave build/ and *.egg-info in the checkout.
        cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/course_utils" "$build/"
        "$COURSE_HUB_VENV/bin/pip" install --quiet --disable-pip-version-check \
            "jupyterhub==$JUPYTERHUB_VERSION" "$build" || { rm -rf "$build"; missing "the Python packages"; }
        rm -rf "$build"
        # The Formgrader and Create Assignment only where the instructor turns them on.
        "$COURSE_HUB_VENV/bin/jupyter" server extension disable --sys-prefix \
            nbgrader.server_extensions.formgrader >/dev/null 2>&1
        "$COURSE_HUB_VENV/bin/jupyter" labextension disable --level=sys_prefix \
            @jupyter/nbgrader:formgrader @jupyter/nbgrader:create-assignment >/dev/null 2>&1
        # No pop-up asking every user whether JupyterLab may fetch news.
        mkdir -p "$COURSE_HUB_VENV/share/jupyter/lab/settings"
        echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}' \
            > "$COURSE_HUB_VENV/share/jupyter/lab/settings/overrides.json"
        # MNIST for lessons 08 and 10, shared read-only (COURSE_DATA_DIR in every server).
        if [ -d "$REPO/data/MNIST" ] && [ ! -d "$COURSE_HUB_VENV/data/MNIST" ]; then
            mkdir -p "$COURSE_HUB_VENV/data" && cp -r "$REPO/data/MNIST" "$COURSE_HUB_VENV/data/"
        fi
        COURSE_DATA_DIR=$COURSE_HUB_VENV/data "$COURSE_HUB_VENV/bin/python" -m course_utils.data --quiet \
            || say "MNIST could not be prepared: lessons 08 and 10 need it"
        chmod -R a+rX "$COURSE_HUB_VENV"
        echo "$version" > "$stamp"
    fi
    exec 9<&-
}

create_users() {
    local user
    for user in "$COURSE_HUB_INSTRUCTOR" $(tail -n +2 "$COURSE_HUB_ROSTER" | cut -d, -f1); do
        id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
        # No one reads another's home: students' work, the instructor's course.
        chmod 700 "/home/$user"
    done
}

create_exchange() {
    mkdir -p "$COURSE_EXCHANGE"
    chmod 755 "$(dirname "$COURSE_EXCHANGE")"
    # Everyone hands in; like /tmp, the sticky bit stops users from removing each other's files.
    chmod 1777 "$COURSE_EXCHANGE"
    install -D -m 644 "$HERE/nbgrader_config.py" /etc/jupyter/nbgrader_config.py
}

# The instructor's copy of the course, made once (their work is never overwritten), closed to
# everyone else; their servers get the Formgrader and read the course's nbgrader_config.py.
create_course() {
    local home=/home/$COURSE_HUB_INSTRUCTOR
    if [ ! -d "$COURSE" ]; then
        say "copying the course to $COURSE"
        mkdir -p "$COURSE"
        tar -C "$REPO" --exclude=.venv --exclude=.git --exclude=data --exclude=test-artifacts \
            --exclude=__pycache__ --exclude=.pytest_cache --exclude='*.egg-info' \
            --exclude=.ipynb_checkpoints --exclude=gradebook.db --exclude=exchange \
            --exclude=submitted --exclude=autograded --exclude=feedback --exclude=release \
            --exclude=source --exclude=mistakes --exclude=grades.csv -cf - . | tar -C "$COURSE" -xf -
    fi
    mkdir -p "$home/.jupyter/labconfig"
    # The server starts in the home folder: the course's configuration is loaded from there.
    cat > "$home/.jupyter/nbgrader_config.py" <<EOF
"""The instructor's nbgrader configuration: the course in $COURSE."""
load_subconfig("$COURSE/nbgrader_config.py")  # noqa: F821
EOF
    cat > "$home/.jupyter/jupyter_server_config.json" <<'EOF'
{"ServerApp": {"jpserver_extensions": {"nbgrader.server_extensions.formgrader": true}}}
EOF
    cat > "$home/.jupyter/labconfig/page_config.json" <<'EOF'
{"disabledExtensions": {"@jupyter/nbgrader:formgrader": false, "@jupyter/nbgrader:create-assignment": false}}
EOF
    chown -R "$COURSE_HUB_INSTRUCTOR:" "$COURSE" "$home/.jupyter"
    chmod 700 "$COURSE"
    # Every lesson with its points in the gradebook, and the roster as its students, again
    # only when the roster changed.
    [ -f "$COURSE/gradebook.db" ] || as_instructor python -m course_utils.autograde.gradebook >/dev/null
    local roster_stamp=$COURSE_HUB_STATE/roster-imported
    if [ "$(cat "$roster_stamp" 2>/dev/null)" != "$(sha256sum < "$COURSE_HUB_ROSTER")" ]; then
        as_instructor nbgrader db student import "$COURSE_HUB_ROSTER" --log-level=WARN
        sha256sum < "$COURSE_HUB_ROSTER" > "$roster_stamp"
    fi
}

# True while the process named in the file runs the program named.
alive() { [ -f "$1" ] && grep -qs "$2" "/proc/$(cat "$1")/cmdline"; }
hub_running() { alive "$PID_FILE" jupyterhub; }

start_hub() {
    [ -s "$COURSE_HUB_STATE/password" ] || (umask 077 && "$BASE_PYTHON" -c \
        "import secrets; print(secrets.token_urlsafe(12))" > "$COURSE_HUB_STATE/password")
    if hub_running; then
        say "already running at $COURSE_HUB_URL"
    else
        if curl -s -o /dev/null "$COURSE_HUB_URL"; then
            echo "hub: something else answers at $COURSE_HUB_URL (set COURSE_HUB_URL)" >&2; exit 1
        fi
        say "starting JupyterHub at $COURSE_HUB_URL"
        # In a session of its own, so that it outlives this script; setsid execs it (no fork).
        cd "$COURSE_HUB_STATE"
        PATH="$COURSE_HUB_VENV/bin:$PATH" COURSE_HUB_PROXY="$(command -v configurable-http-proxy)" \
            setsid "$COURSE_HUB_VENV/bin/jupyterhub" -f "$HERE/jupyterhub_config.py" \
            >>"$LOG" 2>&1 < /dev/null &
        echo $! > "$PID_FILE"
        local waited=0
        until curl -sf "$COURSE_HUB_URL/hub/api" >/dev/null; do
            hub_running || { tail -20 "$LOG" >&2; echo "hub: JupyterHub exited (log: $LOG)" >&2; exit 1; }
            [ $waited -lt 120 ] || { echo "hub: JupyterHub did not answer in 120 s (log: $LOG)" >&2; exit 1; }
            sleep 1; waited=$((waited + 1))
        done
    fi
    say "log in at $COURSE_HUB_URL as $COURSE_HUB_INSTRUCTOR or a student of $COURSE_HUB_ROSTER"
    say "with the password in $COURSE_HUB_STATE/password"
}

stop_hub() {
    if hub_running; then
        local pid waited=0
        pid=$(cat "$PID_FILE")
        # JupyterHub stops the users' servers and the proxy it started on SIGTERM.
        kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null && [ $waited -lt 60 ]; do sleep 1; waited=$((waited + 1)); done
        kill -0 "$pid" 2>/dev/null && { echo "hub: JupyterHub (pid $pid) did not stop" >&2; exit 1; }
        # A proxy the hub found running at its start outlives it.
        alive "$COURSE_HUB_STATE/jupyterhub-proxy.pid" configurable-http-proxy \
            && kill -TERM "$(cat "$COURSE_HUB_STATE/jupyterhub-proxy.pid")"
        say "stopped"
    else
        say "not running"
    fi
    rm -f "$PID_FILE"
}

[ "$(id -u)" = 0 ] || { echo "hub: run as root (it creates users and starts their servers)" >&2; exit 1; }
case "${1:-start}" in
    start)
        install_system_packages
        install_environment
        install -d -m 700 "$COURSE_HUB_STATE"
        create_users
        create_exchange
        create_course
        start_hub
        ;;
    stop) stop_hub ;;
    environment) install_environment ;;
    *) echo "usage: $0 [start|stop|environment]" >&2; exit 2 ;;
esac
