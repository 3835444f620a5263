"""The kernel manager graded notebooks run with: every kernel sandboxed (``pipeline.kernels.sandbox``).

:class:`SandboxedKernelManager` is jupyter_client's ``AsyncKernelManager`` with one
difference: its kernels are launched by a :class:`SandboxProvisioner`, which

- gives each kernel a folder of its own, short-named under the fork server's root,
  holding its connection file and its sockets: kernels talk over ``ipc`` (unix
  sockets), never TCP, since they have no network at all;
- asks the batch's fork server (``pipeline.kernels.kernel_forkserver``) for the kernel, or a
  private fork server of its own when there is no batch (plain ``nbgrader autograde``),
  and, should no server run, starts it directly (``python -m pipeline.kernels.sandbox_kernel``)
  with a warning in the log;
- passes on only the environment variables a kernel may keep
  (``environment.KEPT_VARIABLES``);
- removes the folder (and its private server) when the kernel is shut down for good.

``COURSE_SANDBOX=0`` gives stock jupyter_client behaviour (plain kernels over TCP).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

from pipeline import environment
from pipeline.kernels import sandbox, sandbox_kernel
from pipeline.kernels.kernel_forkserver import ForkServer, kernels_root


class SandboxProvisioner(LocalProvisioner):
    """Launches a sandboxed kernel: forked from a fork server, or directly."""

    folder: Path | None = None
    _private: ForkServer | None = None
    _own_root: Path | None = None

    def _server(self) -> ForkServer | None:
        server = ForkServer.current()
        if server is None:
            if self._private is None or self._private.process.poll() is not None:
                self._private = ForkServer.start(private=True)
            server = self._private
        return server

    async def pre_launch(self, **kwargs):
        km = self.parent
        server = self._server()
        if server is not None:
            root, uid = server.root, server.uid
        else:
            self._own_root = self._own_root or kernels_root()
            root, uid = self._own_root, None
            os.chown(root, os.getuid(), os.getgid())
        name = hashlib.sha256(self.kernel_id.encode()).hexdigest()[:12]
        if self.folder is None or self.folder.parent != root:
            self.folder = root / name
        self.folder.mkdir(mode=0o700, exist_ok=True)
        km.transport = "ipc"
        km.cache_ports = False
        km.ip = str(self.folder / "ipc")
        km.connection_file = str(self.folder / "kernel.json")
        kwargs = await super().pre_launch(**kwargs)
        if uid is not None:  # a root grader's kernels run as `uid`
            for path in (self.folder, self.folder / "kernel.json"):
                os.chown(path, uid, uid)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs):
        arguments = sandbox_kernel.kernel_arguments(cmd)
        env = environment.kept(kwargs.get("env") or os.environ)
        request = {"folder": str(self.folder), "arguments": arguments, "env": env,
                   "name": self.folder.name}
        server = self._server()
        if server is not None and server.root == self.folder.parent:
            try:
                self.process = server.spawn(request)
            except (OSError, ValueError) as error:
                self.log.warning("WARNING: kernel sandbox: the fork server could not start the "
                                 "kernel (%s); starting it directly", error)
            else:
                self.pid, self.pgid = self.process.pid, None
                self.cwd = kwargs.get("cwd", Path.cwd())
                return self.connection_info
        direct = [sys.executable, "-m", "pipeline.kernels.sandbox_kernel", "-m", "ipykernel_launcher",
                  *arguments]
        kwargs = {**kwargs, "env": environment.sandbox_launcher_env(env), "cwd": str(self.folder)}
        info = await super().launch_kernel(direct, **kwargs)
        self.pgid = None  # signals go to the monitor, which passes them on
        return info

    async def send_signal(self, signum: int) -> None:
        """SIGKILL asks the monitor to kill the kernel (so the log gets its last words);
        the monitor itself is killed only if it has not ended 3 s later."""
        if signum == signal.SIGKILL and self.process is not None and self.process.poll() is None:
            self.process.send_signal(sandbox_kernel.KILL_REQUEST)
            for _ in range(30):
                if self.process.poll() is not None:
                    return
                await asyncio.sleep(0.1)
        await super().send_signal(signum)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart)
        if restart:
            return
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self._private is not None:
            self._private.stop()
            self._private = None
        if self._own_root is not None:
            shutil.rmtree(self._own_root, ignore_errors=True)
            self._own_root = None


class SandboxedKernelManager(AsyncKernelManager):
    """Starts every Python kernel sandboxed, through a :class:`SandboxProvisioner`."""

    async def start_kernel(self, **kw) -> None:
        if self.provisioner is None and sandbox.sandboxed():
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = SandboxProvisioner(kernel_id=self.kernel_id,
                                                  kernel_spec=self.kernel_spec, parent=self)
        await super().start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        if not sandbox.sandboxed():
            return command
        try:  # python [flags] -m ipykernel_launcher ARGS
            arguments = sandbox_kernel.kernel_arguments(command)
        except ValueError:  # not an ipykernel: leave it alone
            return command
        interpreter = command[:len(command) - len(arguments) - 2]
        return [*interpreter, "-m", "pipeline.kernels.sandbox_kernel", "-m", "ipykernel_launcher",
                *arguments]
