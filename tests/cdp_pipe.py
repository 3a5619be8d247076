"""A Chrome DevTools Protocol client over a pipe, on the standard library alone (test helper).

Chromium runs with ``--remote-debugging-pipe``, reading commands on file descriptor 3 and writing replies and
events on 4, each message JSON terminated by a NUL byte. :class:`CdpPipe` launches it, sends commands, waits for
their replies and hands every event to :meth:`CdpPipe.on_message`; :mod:`tests.browser_check` builds the page
checker on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

CHROMIUM_ENV = "ALPHAQ_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with `apt-get install chromium` (Debian) or set ALPHAQ_CHROMIUM to a Chromium binary"
# Chromium does not take arbitrary descriptor numbers for the pipe: it reads fd 3 and writes fd 4. The pipe
# ends are passed (pass_fds) at numbers >= 10 and this trampoline moves them to 3 and 4, then becomes Chromium.
_TRAMPOLINE = (
    "import os, sys\n"
    "read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.dup2(read_fd, 3)\n"
    "os.dup2(write_fd, 4)\n"
    "os.close(read_fd)\n"
    "os.close(write_fd)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class ChromiumNotFound(RuntimeError):
    """No Chromium binary: neither $ALPHAQ_CHROMIUM nor chromium / chromium-browser / google-chrome on PATH."""


class BrowserError(RuntimeError):
    """Chromium failed to start, exited, answered a command with an error, or did not answer in time."""


def find_chromium() -> str:
    """The Chromium binary to use: ``$ALPHAQ_CHROMIUM`` if set, else the first of CHROMIUM_NAMES on PATH.

    Returns:
        The binary's absolute path.

    Raises:
        ChromiumNotFound: ``$ALPHAQ_CHROMIUM`` names no executable, or none of the names is on PATH.
    """
    configured = os.environ.get(CHROMIUM_ENV, "").strip()
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise ChromiumNotFound(f"${CHROMIUM_ENV}={configured!r} is not an executable; {INSTALL_HINT}")
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise ChromiumNotFound(f"no Chromium found ({', '.join(CHROMIUM_NAMES)} not on PATH); {INSTALL_HINT}")


class CdpPipe:
    """One headless Chromium process driven over a CDP pipe; ``check`` opens one page at a time.

    Args:
        binary: Chromium binary (default: :func:`find_chromium`).
        launch_timeout: seconds to wait for Chromium to answer its first command.
        extra_args: more command-line switches.
    """

    def __init__(
        self, binary: str | None = None, *, launch_timeout: float = 30.0, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary or find_chromium()
        self.launch_timeout = launch_timeout
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self._stderr: Any = None
        self._to_browser = -1
        self._from_browser = -1
        self._reader: threading.Thread | None = None
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._sessions: dict[str, Any] = {}  # CDP session id -> object with on_event(method, params)
        self._lock = threading.Lock()
        self._closed = False

    # -- process --------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Launch Chromium and wait until it answers.

        Raises:
            BrowserError: it did not start or did not answer within ``launch_timeout``.
        """
        self._profile = tempfile.mkdtemp(prefix="alphaq-chromium-")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (open while Chromium runs; closed in close())
        args = [
            self.binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={self._profile}",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-breakpad",
            "--no-pings",
            "--mute-audio",
            "--metrics-recording-only",
            "--password-store=basic",
            "--use-mock-keychain",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *self.extra_args,
            "about:blank",
        ]
        browser_reads, parent_writes = os.pipe()
        parent_reads, browser_writes = os.pipe()
        # Move the child's ends to >= 10 so the trampoline's dup2 onto 3 and 4 cannot clobber them.
        high_read = fcntl.fcntl(browser_reads, fcntl.F_DUPFD_CLOEXEC, 10)
        high_write = fcntl.fcntl(browser_writes, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(browser_reads)
        os.close(browser_writes)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(high_read), str(high_write), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(high_read, high_write),
                start_new_session=True,
            )
        except OSError as exc:
            for fd in (high_read, high_write, parent_reads, parent_writes):
                os.close(fd)
            self.close()
            raise BrowserError(f"cannot run {self.binary}: {exc}; {INSTALL_HINT}") from exc
        os.close(high_read)
        os.close(high_write)
        self._to_browser, self._from_browser = parent_writes, parent_reads
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        try:
            self.call("Browser.getVersion", timeout=self.launch_timeout)
        except BrowserError:
            self.close()
            raise

    def close(self) -> None:
        """Ask Chromium to quit, kill it (and its process group) if it does not, remove the profile."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    self.send("Browser.close")
                except OSError:
                    pass
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # helpers (renderer, zygote) left in our own process group
            except (ProcessLookupError, PermissionError):
                pass
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._to_browser = self._from_browser = -1
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._stderr is not None:
            self._stderr.close()
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return " | ".join(lines[-5:])

    # -- protocol -------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = b""
        fd = self._from_browser
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                try:
                    self._inbox.put(json.loads(message))
                except ValueError:
                    continue
        self._inbox.put(None)  # end of stream: the browser exited or the pipe was closed

    def send(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None) -> int:
        """Send one command without waiting; returns its id."""
        with self._lock:
            self._next_id += 1
            message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
            if session_id is not None:
                message["sessionId"] = session_id
            data = json.dumps(message).encode("utf-8") + b"\0"
            view = memoryview(data)
            while view:
                written = os.write(self._to_browser, view)
                view = view[written:]
            return self._next_id

    def _pump(self, deadline: float, what: str) -> None:
        """Handle one message from the browser, waiting until ``deadline`` at most."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrowserError(f"Chromium did not answer in time ({what})")
        try:
            message = self._inbox.get(timeout=remaining)
        except queue.Empty:
            raise BrowserError(f"Chromium did not answer in time ({what})") from None
        if message is None:
            self._inbox.put(None)  # keep the end-of-stream mark for later callers
            code = self._proc.poll() if self._proc is not None else None
            raise BrowserError(
                f"Chromium exited ({what}, exit code {code}); stderr: {self._stderr_tail() or '(empty)'}"
            )
        if "id" in message:
            self._replies[message["id"]] = message
            return
        state = self._sessions.get(message.get("sessionId", ""))
        if state is not None:
            state.on_event(message.get("method", ""), message.get("params", {}))

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        *,
        timeout: float = 30.0,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Send a command and wait for its reply, handling events that arrive meanwhile.

        Args:
            method: CDP method, e.g. ``Page.navigate``.
            params: its parameters.
            session_id: the target session (None: the browser).
            timeout: seconds to wait (ignored when ``deadline`` is given).
            deadline: ``time.monotonic()`` value to wait until.

        Returns:
            The command's result.

        Raises:
            BrowserError: an error reply, no reply in time, or the browser exited.
        """
        if self._to_browser < 0:
            raise BrowserError("the browser is not running")
        end = deadline if deadline is not None else time.monotonic() + timeout
        try:
            command_id = self.send(method, params, session_id)
        except OSError as exc:
            raise BrowserError(f"cannot send {method} to Chromium: {exc}") from exc
        while command_id not in self._replies:
            self._pump(end, method)
        reply = self._replies.pop(command_id)
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error'].get('message', reply['error'])}")
        return reply.get("result", {})
