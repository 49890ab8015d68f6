"""The CSV rows of a run: how they are formatted, and the process that writes them.

Formatting a logged step (400 floats of ``layers.csv`` as shortest round-trip text, at depth
50) costs about as much as the per-layer statistics themselves. ``RowWriterProcess`` hands
the numbers to a child process, which formats and appends them while training goes on, on
the other core. The child runs this file as a script: it imports the standard library only
(no numpy, not even gradlab), so it starts in ~20 ms, and the lines it writes are the ones
``layer_lines`` gives in the training process, byte for byte (metrics lines, ten values a
step, are formatted by the training process and sent as text).

Messages on the child's stdin: a header (kind, step, columns, payload bytes), then the
payload. ``L``: a layers block, float64 values in column order (``columns`` statistics for
each hidden layer); ``M``: one metrics line, UTF-8 text; ``F``: append everything received
so far to the files and flush them. At end of input (a ``close``, or the training process
killed, even by SIGKILL) the child writes what it has and exits. It ignores SIGINT: Ctrl-C
is the training process's to handle.
"""

import signal
import struct
import subprocess
import sys
from array import array

HEADER = struct.Struct("<cqII")  # kind, step, columns, payload bytes


def layer_lines(step: int, columns: list[list[float]]) -> str:
    """The layers.csv lines of one logged step: ``columns`` holds one list of floats per
    statistic, each with one value per hidden layer (layers numbered from 1)."""
    return "".join(
        f"{step},{layer},{','.join(map(repr, row))}\n"
        for layer, row in enumerate(zip(*columns, strict=True), 1)
    )


class RowWriterProcess:
    """The training side: queue rows, ``flush`` them to the child, ``close`` to finish.

    ``OSError`` from the pipe means the child has gone; ``close`` raises ``RuntimeError``
    with what the child printed when it did not end cleanly.
    """

    def __init__(self, metrics_path, layers_path):
        if not sys.executable:  # an embedding interpreter: no Python to start
            raise OSError("no Python executable to run the row writer")
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(metrics_path), str(layers_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,  # not in the terminal's process group: no Ctrl-C
        )
        self._pending = bytearray()

    def layers(self, step: int, block: bytes, columns: int) -> None:
        """``block``: float64 bytes, ``columns`` statistics of each hidden layer in turn."""
        self._pending += HEADER.pack(b"L", step, columns, len(block))
        self._pending += block

    def metrics(self, line: str) -> None:
        data = line.encode()
        self._pending += HEADER.pack(b"M", 0, 0, len(data))
        self._pending += data

    def flush(self) -> None:
        self._pending += HEADER.pack(b"F", 0, 0, 0)
        data, self._pending = self._pending, bytearray()
        self._process.stdin.write(data)

    def close(self) -> None:
        """Send what is queued, let the child finish, and check that it did."""
        try:
            if self._pending:
                self.flush()
        finally:
            _, stderr = self._process.communicate()
        if self._process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines() or ["no message"]
            raise RuntimeError(f"exit code {self._process.returncode}: {lines[-1]}")


def _read(stream, size: int) -> bytes:
    data = stream.read(size)
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise EOFError
        data += more
    return data


def _serve(metrics_path: str, layers_path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stream = sys.stdin.buffer
    files = {
        "M": open(metrics_path, "a", encoding="utf-8", newline=""),
        "L": open(layers_path, "a", encoding="utf-8", newline=""),
    }
    pending = {"M": [], "L": []}

    def write_pending():
        for key, handle in files.items():
            if pending[key]:
                handle.write("".join(pending[key]))
                handle.flush()
                pending[key].clear()

    try:
        while header := stream.read(HEADER.size):
            kind, step, columns, size = HEADER.unpack(_read_rest(stream, header))
            payload = _read(stream, size) if size else b""
            if kind == b"L":
                values = array("d")
                values.frombytes(payload)
                depth = len(values) // columns
                block = [values[k * depth : (k + 1) * depth].tolist() for k in range(columns)]
                pending["L"].append(layer_lines(step, block))
            elif kind == b"M":
                pending["M"].append(payload.decode())
            elif kind == b"F":
                write_pending()
            else:
                raise ValueError(f"unknown message {kind!r}")
    except EOFError:
        pass  # the training process ended mid-message: keep every whole one
    finally:
        write_pending()
        for handle in files.values():
            handle.close()


def _read_rest(stream, start: bytes) -> bytes:
    return start + _read(stream, HEADER.size - len(start)) if len(start) < HEADER.size else start


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
