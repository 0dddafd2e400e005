"""The kernel provisioner of autograding: starts each kernel in its sandbox, or forks it from a
zygote, and talks to it over IPC (a kernel without network cannot use TCP).

jupyter_client finds it by the name ``PROVISIONER_NAME`` (an entry point of the group
``jupyter_client.kernel_provisioners`` in ``pyproject.toml``), named in a kernel spec's
``metadata.kernel_provisioner``, as ``SandboxedKernelManager`` names it. What it needs to know
of one kernel it reads from its kernel manager, where set: ``zygote`` (fork the kernel from it
where it serves it) and ``folder_files`` (the notebook folder's files, name -> where they are
now, for a kernel started before nbgrader fills the folder).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Any

from jupyter_client import launch_kernel
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase

from course_utils.autograde.kernels import cgroups, folders
from course_utils.autograde.kernels.forked import Zygote, ZygoteError
from course_utils.autograde.kernels.policy import (GUARDED_KERNEL, UNPRIVILEGED_ID, Sandbox,
                                                   bwrap_command, kernel_user_id,
                                                   notebook_folder_files)

PROVISIONER_NAME = "course-sandbox"
# Seconds between two looks at whether a kernel has ended.
_POLL_INTERVAL = 0.1


class SandboxProvisioner(KernelProvisionerBase):
    """Provisions a kernel in its sandbox: forked from its manager's zygote where that serves
    it, else started alone under bubblewrap (``policy.bwrap_command``)."""

    # Whether the kernel was forked from a zygote (else started alone); kept once it ends.
    forked = False
    _private: str | None = None  # the kernel's folder: IPC sockets and connection file
    _process: subprocess.Popen | None = None  # a kernel started alone
    _zygote: Zygote | None = None  # the zygote a forked kernel came from
    _forked_id: str | None = None  # and its id there
    _kernel_cmd: list[str] = []
    _folder = ""
    _files: dict[str, str] | None = None
    _cgroup: cgroups.KernelCgroup | None = None  # the kernel's processes' memory, together
    _user = UNPRIVILEGED_ID

    @property
    def has_process(self) -> bool:
        return self._process is not None or self._forked_id is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Writes the connection file into the kernel's own folder, for IPC, and returns the
        command that starts the kernel alone in its sandbox, the guard in place before any of
        the notebook's code runs."""
        manager = self.parent
        if manager.transport_encryption == "required":
            raise RuntimeError("sandboxed kernels talk over unix sockets in a private folder, "
                               "without transport encryption")
        zygote: Zygote | None = getattr(manager, "zygote", None)
        if self._private is None:  # not on a restart
            self._private = tempfile.mkdtemp(prefix="course-sandbox-",
                                             dir=zygote.root if zygote else None)
            # A kernel the zygote may fork runs as the zygote's user.
            self._user = UNPRIVILEGED_ID if zygote else kernel_user_id()
            if os.geteuid() == 0:  # the kernel reads its folder, and writes only its sockets
                os.chown(self._private, 0, self._user)
                os.chmod(self._private, 0o750)
            folders.make_sockets_folder(self._private, self._user)
        manager.transport = "ipc"
        manager.ip = os.path.join(self._private, folders.SOCKETS, "kernel")
        manager.connection_file = os.path.join(self._private, "connection.json")
        manager.write_connection_file()
        os.chmod(manager.connection_file, 0o644)
        self.connection_info = manager.get_connection_info()
        # Signals from outside do not reach a kernel in its own session and PID namespace:
        # interrupts go over the control channel instead.
        self.kernel_spec.interrupt_mode = "message"
        kernel_cmd = manager.format_kernel_cmd(extra_arguments=kwargs.pop("extra_arguments", []))
        self._kernel_cmd = [GUARDED_KERNEL if arg == "ipykernel_launcher" else arg
                            for arg in kernel_cmd]
        self._folder = os.path.abspath(kwargs.get("cwd") or os.getcwd())
        self._files = getattr(manager, "folder_files", None)
        # The sandbox enters the folder itself; outside, it may not exist yet.
        kwargs["cwd"] = self._folder if self._files is None else self._private
        command = bwrap_command(self._kernel_cmd, self._folder, self._private,
                                Sandbox(config=manager.config), self._files, self._user)
        return await super().pre_launch(cmd=command, **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Forks the kernel from the manager's zygote where it serves it
        (``course_utils.autograde.kernels.forked``), else runs ``cmd``."""
        assert self._private is not None
        zygote: Zygote | None = getattr(self.parent, "zygote", None)
        files = notebook_folder_files(self._folder) if self._files is None else self._files
        if (zygote is not None and zygote.serves(self._kernel_cmd, self._folder)
                and all(os.path.isfile(path) for path in files.values())):
            self._cgroup = cgroups.create(int(zygote.settings.memory_gib * (1 << 30)))
            try:
                self._forked_id = zygote.start_kernel(self._private, self._kernel_cmd,
                                                      self._folder, files)
                self._zygote, self.forked = zygote, True
                self._enter_cgroup()
                return self.connection_info
            except (ZygoteError, OSError) as error:
                self.log.warning("Starting the kernel alone: the zygote could not fork it (%s)",
                                 error)
                if self._forked_id is not None:
                    zygote.kill(self._forked_id)
                self._forked_id, self._zygote, self.forked = None, None, False
                self._leave_cgroup()
                shutil.rmtree(os.path.join(self._private, "files"), ignore_errors=True)
        self._cgroup = cgroups.create(int(Sandbox(config=self.parent.config).memory_gib
                                          * (1 << 30)))
        if self._cgroup is not None:  # joined before bubblewrap starts
            cmd = self._cgroup.join_command(cmd)
        self._process = launch_kernel(cmd, **{name: value for name, value in kwargs.items()
                                              if name not in ("extra_arguments", "kernel_id")})
        self.forked = False
        return self.connection_info

    def _enter_cgroup(self) -> None:
        """Moves the forked kernel's processes into its cgroup: before its client connects,
        so before any of the notebook's code runs (what they start later joins them)."""
        if self._cgroup is None:
            return
        assert self._zygote is not None and self._forked_id is not None
        moved: set[int] = set()
        while True:
            found = set(self._zygote.kernel_processes(self._forked_id))
            if not found:
                raise ZygoteError("the forked kernel's processes were not found")
            if found <= moved:
                return
            for pid in sorted(found - moved):
                try:
                    self._cgroup.add(pid)
                except ProcessLookupError:  # ended since
                    pass
            moved |= found

    def _leave_cgroup(self) -> None:
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None

    async def poll(self) -> int | None:
        if self._process is not None:
            return self._process.poll()
        if self._zygote is not None and self._forked_id is not None:
            return self._zygote.exit_status(self._forked_id)
        return 0

    async def wait(self) -> int | None:
        status = await self.poll()
        while status is None:
            await asyncio.sleep(_POLL_INTERVAL)
            status = await self.poll()
        if self._process is not None:
            self._process.wait()
        self._process = self._forked_id = None
        return status

    async def send_signal(self, signum: int) -> None:
        """Signals the kernel alone and its sandbox (bubblewrap leads their process group); a
        forked kernel only ends (its interrupts are messages)."""
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signum)
            except OSError:
                self._process.send_signal(signum)
        elif (self._zygote is not None and self._forked_id is not None
              and signum in (signal.SIGKILL, signal.SIGTERM)):
            self._zygote.kill(self._forked_id)

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        """Removes the kernel's cgroup, and its folder unless it restarts."""
        self._leave_cgroup()
        if self._private and not restart:
            folders.remove(self._private)
            self._private = None
