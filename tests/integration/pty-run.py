#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""pty-run.py — run a command on a pseudo-terminal and answer its prompts.

    pty-run.py SECONDS [EXPECT ANSWER]... -- COMMAND [ARG]...

COMMAND runs with a new pty as its controlling terminal and standard input, output and error.
For each pair in order, the script waits until EXPECT has appeared in the output (since the
previous answer), then types ANSWER followed by a newline. Answers are sent only once their
prompt is there, so a program that turns echo off or flushes input before prompting sees
exactly what a person would type. An ANSWER written "hidden:TEXT" is a password: TEXT is
typed only once the terminal's echo is off, as a person would wait for a program that prints
its prompt before it turns echo off (pkttyagent does); it is never typed while echo is on.
Afterwards the output is read until the command exits.

Prints the whole terminal transcript (what a person would have seen) on standard output and
exits with the command's status; 124 if SECONDS pass first (the command is killed), 125 on a
usage error. Used by the clubctl tests for what only happens on a terminal: the hidden key
prompt, the unregister question, polkit's password prompt.
"""
import os
import pty
import select
import signal
import sys
import termios
import time


def main(argv):
    if len(argv) < 4 or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 125
    sep = argv.index("--")
    deadline = time.monotonic() + float(argv[1])
    pairs = argv[2:sep]
    cmd = argv[sep + 1:]
    if len(pairs) % 2 or not cmd:
        print(__doc__, file=sys.stderr)
        return 125

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)

    out = b""
    seen = 0                    # answers only look at output after the previous answer
    step = 0
    status = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.stdout.write(out.decode(errors="replace"))
            return 124
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:     # EIO: the other side is closed, the command is done
                data = b""
            if not data:
                break
            out += data
        while step < len(pairs) and pairs[step].encode() in out[seen:]:
            answer = pairs[step + 1]
            if answer.startswith("hidden:"):
                if termios.tcgetattr(fd)[3] & termios.ECHO:
                    break       # not yet: look again after the next read or 0.2 s
                answer = answer[len("hidden:"):]
            seen = out.index(pairs[step].encode(), seen) + len(pairs[step])
            os.write(fd, answer.encode() + b"\n")
            step += 2
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace"))
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8


if __name__ == "__main__":
    sys.exit(main(sys.argv))
