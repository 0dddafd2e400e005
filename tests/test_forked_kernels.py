"""Kernels forked from the zygote: as fresh as a kernel started alone, and confined from each
other, from the zygote and from the machine, tested by attacks from inside real kernels."""

from __future__ import annotations

import ast
import os
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_core.utils import run_sync
from traitlets.config import Config

from course_utils.autograde.kernels import folders
from course_utils.autograde.kernels import forked as forked_kernels
from course_utils.autograde.kernels.manager import SandboxedKernelManager
from course_utils.autograde.kernels.policy import Sandbox, missing
from hostile_class import ATTACKS, PRELUDE

# The kernels' memory here: small, so that attacks on it cost the machine little.
MEMORY_GIB = 2.0
# Their scratch spaces, each: and what all the zygote's kernels' folders hold together.
SCRATCH_MIB = 64
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing() is not None, reason=f"no sandbox here: {missing()}")]


class Kernel:
    """A kernel of the notebook folder ``folder``, and a client that runs code in it."""

    # The zygote the kernels are forked from (None: each starts alone).
    zygote: forked_kernels.Zygote | None = None

    def __init__(self, folder: Path, files: dict[str, str] | None = None,
                 config: Config | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.manager = SandboxedKernelManager(kernel_name="python3", config=config or Config())
        self.manager.folder_files, self.manager.zygote = files or {}, Kernel.zygote
        run_sync(self.manager.start_kernel)(
            cwd=str(folder), extra_arguments=["--HistoryManager.hist_file=:memory:"])
        self.client = BlockingKernelClient()
        self.client.load_connection_info(self.manager.get_connection_info())
        # No heartbeat: a kernel still importing under load misses beats, and a client that
        # listens to them calls it dead; the kernel_info reply within the time limit decides.
        self.client.start_channels(hb=False)
        self.client.wait_for_ready(timeout=120)

    @property
    def forked(self) -> bool:
        return self.manager.forked

    def run(self, code: str) -> str:
        """What ``code`` printed (errors included)."""
        said: list[str] = []

        def keep(message: dict) -> None:
            content = message["content"]
            said.append(content.get("text", "") or "\n".join(content.get("traceback", [])))
        self.client.execute_interactive(textwrap.dedent(code), timeout=120, output_hook=keep)
        return "".join(said).strip()

    def stop(self) -> None:
        self.client.stop_channels()
        run_sync(self.manager.shutdown_kernel)(now=True)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[forked_kernels.Zygote]:
    """One zygote for the module's tests, serving a course's ``autograded`` folder: each test
    shows, too, that what earlier tests did to their kernels left it able to serve."""
    zygote = forked_kernels.Zygote(str(tmp_path_factory.mktemp("autograded")),
                                   Sandbox(processes=40, memory_gib=MEMORY_GIB,
                                           scratch_mib=SCRATCH_MIB))
    yield zygote
    zygote.close()


@pytest.fixture
def autograded(zygote: forked_kernels.Zygote, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder of the zygote's ``autograded`` folder for this test alone, served by the zygote."""
    folder = Path(zygote.autograded) / request.node.name
    folder.mkdir()
    Kernel.zygote = zygote
    yield folder
    Kernel.zygote = None


FRESH_STATE = """
    import sys, torch, numpy, random
    print(sorted(name for name in ("torch", "course_utils.graders", "matplotlib.pyplot")
                 if name in sys.modules))
    print(torch.get_num_threads(), torch.rand(3).tolist())
    print(numpy.random.randint(1 << 30), random.getrandbits(30))
    import matplotlib.pyplot as plt, tqdm.auto
    print(plt.get_backend(), tqdm.auto.tqdm.__module__)
"""


def test_a_forked_kernel_is_warm_but_starts_as_a_fresh_one(autograded: Path,
                                                          tmp_path: Path) -> None:
    forked = [Kernel(autograded / name / "02_loss") for name in ("al", "bea")]
    Kernel.zygote = None
    alone = Kernel(tmp_path / "alone")
    try:
        assert [kernel.forked for kernel in forked + [alone]] == [True, True, False]
        states = [kernel.run(FRESH_STATE).splitlines() for kernel in forked + [alone]]
    finally:
        for kernel in forked + [alone]:
            kernel.stop()
    (imported_a, torch_a, seeds_a, plots_a), (_, torch_b, seeds_b, _), \
        (imported, torch_alone, _, plots_alone) = states
    assert imported_a == "['course_utils.graders', 'torch']"
    assert "course_utils.graders" not in imported
    # the threads of a fresh kernel, and every generator seeded anew, as in a fresh process
    assert torch_a.split()[0] == torch_b.split()[0] == torch_alone.split()[0]
    assert torch_a != torch_b and seeds_a != seeds_b
    assert plots_a == plots_alone and plots_a.startswith("module://matplotlib_inline")


def test_forked_kernels_see_nothing_of_each_other(autograded: Path) -> None:
    eve_secret = secrets.token_hex(16)
    eve = Kernel(autograded / "eve" / "02_loss")
    bea = Kernel(autograded / "bea" / "02_loss")
    try:
        eve.run(f"""
            import os
            for path in ("/tmp/secret", "/dev/shm/secret", "secret.txt"):
                open(path, "w").write({eve_secret!r})
        """)
        seen = bea.run(f"""
            import os, subprocess
            own = os.path.dirname({bea.manager.connection_file!r})
            print(os.listdir(os.path.dirname(own)) == [os.path.basename(own)])
            print(os.listdir({str(autograded)!r}), os.listdir("/tmp"), os.listdir("/dev/shm"))
            found = subprocess.run(["grep", "-rls", {eve_secret!r}, "/tmp", "/dev", "/var",
                                    {str(autograded)!r}, os.path.dirname(own)],
                                   capture_output=True, text=True).stdout
            print("found:", found.split())
            readable = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                for entry in ("environ", "maps", "cwd", "root", "fd/0"):
                    try:
                        open(f"/proc/{{pid}}/{{entry}}", "rb").read(1) if entry in (
                            "environ", "maps") else os.readlink(f"/proc/{{pid}}/{{entry}}")
                        readable.append(f"{{pid}}/{{entry}}")
                    except OSError:
                        pass
            print({{entry.split("/")[0] for entry in readable}} == {{os.readlink("/proc/self")}}
                  or readable)
        """).splitlines()
    finally:
        eve.stop()
        bea.stop()
    assert seen[0] == "True"  # of the kernels' folders, only its own
    assert seen[1].startswith("['bea'] [") and eve_secret not in seen[1]
    assert seen[2] == "found: []"
    # /proc shows the zygote's processes, other kernels' among them, but only its own can be
    # read beyond what ps shows: the others are in other user namespaces
    assert seen[3] == "True"


def test_a_kernel_that_kills_and_unmounts_what_it_can_harms_no_other(autograded: Path) -> None:
    bea = Kernel(autograded / "bea" / "02_loss")
    eve = Kernel(autograded / "eve" / "02_loss")
    try:
        root = os.path.dirname(os.path.dirname(eve.manager.connection_file))
        tried = eve.run(f"""
            import os, signal, subprocess
            own = {{int(line.split()[-1]) for task in os.listdir("/proc/self/task")
                   for line in open(f"/proc/self/task/{{task}}/status")
                   if line.startswith("NSpid:")}}  # its own threads, by its own numbers
            for pid in range(1, 4096):
                if pid not in own:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            # root in a user namespace of its own: the mounts that hide the rest stay
            script = "umount -l {root}; umount -l /tmp; umount -l {autograded}; ls {root}"
            print(subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                  script], capture_output=True, text=True).stdout.split())
        """)
        assert bea.run("print(6 * 7)") == "42"  # untouched
        carl = Kernel(autograded / "carl" / "02_loss")  # and the zygote still forks
        assert carl.forked and carl.run("print('carl')") == "carl"
        carl.stop()
    finally:
        bea.stop()
        eve.stop()
    own = os.path.basename(os.path.dirname(eve.manager.connection_file))
    assert tried == str([own])  # of the kernels' folders, still only its own


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "started_alone"])
def test_limits_hold_per_kernel(autograded: Path, forked: bool) -> None:
    if not forked:
        Kernel.zygote = None
    limit = 40 if forked else Sandbox().processes  # the zygote's settings, or the defaults
    eve = Kernel(autograded / "eve" / "02_loss")
    bea = Kernel(autograded / "bea" / "02_loss")
    try:
        assert eve.forked == bea.forked == forked
        bomb = eve.run(f"""
            import resource, subprocess
            print(resource.getrlimit(resource.RLIMIT_NPROC)[0],
                  resource.getrlimit(resource.RLIMIT_CORE)[0])
            started = []
            try:
                for _ in range({limit + 100}):
                    started.append(subprocess.Popen(["sleep", "60"]))
            except OSError as error:
                print(len(started) < {limit}, type(error).__name__)
        """).splitlines()
        # the other kernel still starts threads and processes: the count is per kernel
        other = bea.run("""
            import subprocess, threading
            workers = [threading.Thread(target=lambda: None) for _ in range(20)]
            [worker.start() for worker in workers]; [worker.join() for worker in workers]
            print(subprocess.run(["echo", "fine"], capture_output=True, text=True).stdout)
        """)
    finally:
        eve.stop()
        bea.stop()
    assert bomb == [f"{limit} 0", "True BlockingIOError"]
    assert other == "fine"


def test_the_next_kernel_inherits_nothing_a_previous_one_was_given(autograded: Path,
                                                                  tmp_path: Path) -> None:
    block = secrets.token_bytes(32)
    given = tmp_path / "data.bin"
    given.write_bytes(block * 512)  # a file in the first student's notebook folder
    first = Kernel(autograded / "eve" / "02_loss", {"data.bin": str(given)})
    assert first.run("print(open('data.bin', 'rb').read(32).hex())") == block.hex()
    first.stop()
    second = Kernel(autograded / "bea" / "02_loss")
    try:
        # the file's bytes twice in a row, anywhere in the new kernel's writable memory
        found = second.run(f"""
            block = bytes.fromhex({block.hex()!r})
            hits = 0
            with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb") as memory:
                for line in maps:
                    span, perms = line.split()[:2]
                    start, end = (int(x, 16) for x in span.split("-"))
                    if not perms.startswith("rw") or end - start > 1 << 30:
                        continue
                    try:
                        memory.seek(start)
                        chunk = memory.read(end - start)
                    except OSError:
                        continue
                    at = chunk.find(block)
                    while at != -1:
                        hits += chunk[at + 32:at + 64] == block
                        at = chunk.find(block, at + 1)
            print(hits)
        """)
    finally:
        second.stop()
    assert found == "0"


def test_kernels_start_alone_where_the_zygote_cannot_serve(monkeypatch, tmp_path: Path,
                                                          caplog) -> None:
    monkeypatch.setattr(forked_kernels, "zygote_command", lambda *args: ["false"])
    assert forked_kernels.start_for(str(tmp_path), Sandbox()) is None
    assert "start one by one" in caplog.text
    kernel = Kernel(tmp_path / "alone")
    try:
        assert not kernel.forked and kernel.run("print('alone')") == "alone"
    finally:
        kernel.stop()


SEEN = """
    import os, course_utils
    course = os.path.dirname(os.path.dirname(course_utils.__file__))
    def writable(path):
        try:
            open(os.path.join(path, "probe"), "w").close()
            return True
        except OSError:
            return False
    print(sorted(os.listdir("/")), sorted(os.listdir("/dev")))
    print(sorted(os.listdir(course)))
    print(sorted(os.listdir(os.path.dirname(os.getcwd()))), sorted(os.listdir(".")))
    print(open("data.csv").read(), writable("/tmp"), writable("/dev/shm"), writable("."),
          writable(".."), writable("../.."))
    try:
        open("data.csv", "a")
    except OSError as error:
        print(type(error).__name__)
"""


def test_a_forked_kernel_sees_what_a_kernel_started_alone_sees(autograded: Path,
                                                               tmp_path: Path) -> None:
    given = tmp_path / "data.csv"
    given.write_text("x,y")
    (autograded / "eve" / "02_loss").mkdir(parents=True)  # another student's folder
    folder = autograded / "bea" / "02_loss"
    seen = {}
    for forked in (True, False):
        Kernel.zygote = Kernel.zygote if forked else None
        kernel = Kernel(folder, {"data.csv": str(given)})
        try:
            assert kernel.forked == forked
            seen[forked] = kernel.run(SEEN).splitlines()
        finally:
            kernel.stop()
    assert seen[True] == seen[False]
    root_listing, course, neighbours, data, denied = seen[True]
    assert "tmp" in root_listing and "home" not in root_listing
    # of the course folder, only the package, its data and pyproject.toml (and a virtual
    # environment there): no solutions, tests or gradebook
    assert set(ast.literal_eval(course)) <= {"course_utils", "data", "pyproject.toml",
                                             ".venv"}
    assert neighbours == "['02_loss'] ['data.csv']"
    # the folders leading to the notebook's are not the kernel's to write, either way
    assert data == "x,y True True True False False"
    assert denied in ("PermissionError", "OSError")  # another user's file, or read-only


def test_any_kernel_manager_starts_a_sandboxed_kernel_through_the_provisioner(
        tmp_path: Path) -> None:
    """The provisioner is jupyter_client's: a kernel spec that names it is enough."""
    import json
    import sys
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from course_utils.autograde.kernels.provisioner import PROVISIONER_NAME, SandboxProvisioner
    spec = tmp_path / "kernels" / "sandboxed"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sandboxed", "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": PROVISIONER_NAME}}}))
    folder = tmp_path / "notebook"
    folder.mkdir()
    manager = AsyncKernelManager(kernel_name="sandboxed", kernel_spec_manager=KernelSpecManager(
        kernel_dirs=[str(tmp_path / "kernels")]))
    run_sync(manager.start_kernel)(cwd=str(folder))
    client = BlockingKernelClient()
    client.load_connection_info(manager.get_connection_info())
    client.start_channels(hb=False)
    try:
        client.wait_for_ready(timeout=120)
        said: list[str] = []
        client.execute_interactive(
            "import socket; print(socket.gethostname(), 'sandboxed.guard' in "
            "open('/proc/self/cmdline').read())", timeout=120,
            output_hook=lambda message: said.append(message["content"].get("text", "")))
        assert isinstance(manager.provisioner, SandboxProvisioner)
        assert manager.transport == "ipc" and "".join(said).split() == ["sandbox", "True"]
    finally:
        client.stop_channels()
        run_sync(manager.shutdown_kernel)(now=True)
    private = os.path.dirname(manager.connection_file)
    assert not manager.has_kernel and not os.path.exists(private)


def hostile(name: str) -> str:
    """The code of the hostile class's attack ``name``, as its notebook runs it."""
    return PRELUDE + next(attack.code for attack in ATTACKS if attack.name == name)


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "started_alone"])
def test_memory_holds_for_the_kernels_processes_together(autograded: Path, forked: bool) -> None:
    """Six processes, each under the per-process limit (0.4 of it), together far over the
    kernel's."""
    if not forked:
        Kernel.zygote = None
    eve = Kernel(autograded / "eve" / "02_loss",
                 config=Config({"Sandbox": {"memory_gib": MEMORY_GIB}}))
    try:
        assert eve.forked == forked
        group = eve.manager.provisioner._cgroup
        if group is None:
            pytest.skip("no memory cgroup can be made here")
        said = eve.run(hostile("memory_tree"))
        peak = group.peak()
        path = group.path
    finally:
        eve.stop()
    held = int(said.rsplit(" ", 1)[-1])
    print(f"{said}; the kernel's processes peaked at {peak >> 20} MiB together")
    assert said.startswith("memory held by children:") and held <= 2
    assert peak <= MEMORY_GIB * (1 << 30)
    assert not os.path.exists(path)


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "started_alone"])
def test_the_connection_folder_takes_no_disk_and_little_memory(autograded: Path,
                                                               forked: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root keeps the kernels' folders in memory")
    if not forked:
        Kernel.zygote = None
    eve = Kernel(autograded / "eve" / "02_loss")
    try:
        assert eve.forked == forked
        said = eve.run(hostile("disk_in_connection_folder")).splitlines()
        private = os.path.dirname(eve.manager.connection_file)
    finally:
        eve.stop()
    # refused in the kernel's folder; in its sockets' folder, no more than that folder's size
    assert said == [f"connection folder: {os.path.basename(private)} 0 MiB, refused EACCES",
                    f"connection folder: ipc {folders.SOCKETS_MIB} MiB, refused ENOSPC"]
    assert not os.path.exists(private)
