#!/usr/bin/env python3
"""Drive the loom binary the way a person would, for tests/cli_test.lua.

  drive.py sigint LOOM CODE     run `loom -e CODE`, wait for "ready" on stdout,
                                send SIGINT, print the exit status
  drive.py repl LOOM            type lines into the REPL on a pseudo-terminal,
                                print what the terminal showed and the status
  drive.py repl-ctrl-c LOOM     the same with Ctrl-C: during a waiting line, a
                                busy line, typed text; twice at an empty prompt
"""
import os, pty, select, signal, subprocess, sys, time


def sigint(loom, code):
    p = subprocess.Popen([loom, "-e", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    line = p.stdout.readline()
    if b"ready" not in line:
        print("no ready line: %r" % line)
        p.kill()
        return
    p.send_signal(signal.SIGINT)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        print("did not exit")
        return
    print("status", p.returncode)


def repl(loom, ctrl_c=False):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(loom, [loom])
    out = b""
    seen = 0

    def expect(s, timeout=10):
        """Wait for s in what came since the last expect."""
        nonlocal out, seen
        end = time.time() + timeout
        while s.encode() not in out[seen:]:
            r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
            if not r:
                raise SystemExit("timeout waiting for %r; got %r" % (s, out))
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
        if s.encode() in out[seen:]:
            seen = out.index(s.encode(), seen) + len(s)

    expect("> ")
    if ctrl_c:
        return ctrl_c_session(pid, fd, expect, lambda: out)
    os.write(fd, b"x = 6 * 7\n"); expect("> ")
    os.write(fd, b"x + 0.5\n"); expect("42.5")
    os.write(fd, b"loom.sleep(0.01) return 'slept'\n"); expect("slept")
    os.write(fd, b"for i = 1, 2 do\n"); expect(">> ")
    os.write(fd, b"print('line', i) end\n"); expect("line\t2")
    os.write(fd, b"error('oops')\n"); expect("stdin:1: oops")
    os.write(fd, b"\x04")
    for _ in range(100):
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        _, st = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
    print("\nstatus", os.waitstatus_to_exitcode(st))


def finish(pid, out):
    for _ in range(100):
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        _, st = os.waitpid(pid, 0)
    sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
    print("\nstatus", os.waitstatus_to_exitcode(st))


def ctrl_c_session(pid, fd, expect, out):
    """Each step waits for what shows the previous one took effect."""
    os.write(fd, b"x = 6 * 7\n"); expect("> ")
    # the other task runs once the line waits: "waiting" says it does
    os.write(fd, b"loom.spawn(print, 'wait' .. 'ing') loom.sleep(30)\n"); expect("waiting")
    os.write(fd, b"\x03"); expect("interrupted\r\n")
    expect("> ")
    os.write(fd, b"print('spin' .. 'ning') while true do end\n"); expect("spinning")
    # (Ctrl-C may come while print runs or in the loop: "interrupted!" both)
    os.write(fd, b"\x03"); expect("interrupted!")
    expect("> ")
    os.write(fd, b"x + 0.5\n"); expect("42.5"); expect("> ")
    os.write(fd, b"nonsense"); expect("nonsense")  # typed, not entered
    os.write(fd, b"\x03"); expect("> ")
    os.write(fd, b"'after ' .. 'discard'\n"); expect("after discard"); expect("> ")
    os.write(fd, b"\x03"); expect("(To exit, press Ctrl-C again or Ctrl-D)")
    os.write(fd, b"\x03")
    finish(pid, out())


if __name__ == "__main__":
    if sys.argv[1] == "sigint":
        sigint(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "repl-ctrl-c":
        repl(sys.argv[2], ctrl_c=True)
    else:
        repl(sys.argv[2])
