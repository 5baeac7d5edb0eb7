#!/usr/bin/env python3
"""Drive the loom binary the way a person would, for tests/cli_test.lua.

  drive.py sigint LOOM CODE     run `loom -e CODE`, wait for "ready" on stdout,
                                send SIGINT, print the exit status
  drive.py repl LOOM            type lines into the REPL on a pseudo-terminal,
                                print what the terminal showed and the status
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


def repl(loom):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(loom, [loom])
    out = b""

    def expect(s, timeout=10):
        nonlocal out
        end = time.time() + timeout
        while s.encode() not in out:
            r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
            if not r:
                raise SystemExit("timeout waiting for %r; got %r" % (s, out))
            try:
                out += os.read(fd, 4096)
            except OSError:
                break

    expect("> ")
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


if __name__ == "__main__":
    if sys.argv[1] == "sigint":
        sigint(sys.argv[2], sys.argv[3])
    else:
        repl(sys.argv[2])
