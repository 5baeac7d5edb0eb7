"""Write, then read, n files of `size` bytes concurrently: asyncio tasks that
offload each blocking file call to the default thread pool (asyncio.to_thread,
what aiofiles does).

    python3 bench/fs_bench.py [n] [size]

Prints the time of each phase; the directory is removed at the end.
"""
import asyncio
import os
import shutil
import sys
import tempfile
import time


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


async def main(n, size):
    d = await asyncio.to_thread(tempfile.mkdtemp, prefix="bench-")
    data = b"x" * size
    names = [os.path.join(d, f"f{i + 1}") for i in range(n)]
    t0 = time.perf_counter()
    await asyncio.gather(*(asyncio.to_thread(write_file, p, data) for p in names))
    t1 = time.perf_counter()
    bufs = await asyncio.gather(*(asyncio.to_thread(read_file, p) for p in names))
    t2 = time.perf_counter()
    assert sum(map(len, bufs)) == n * size, "read back what was written"
    await asyncio.to_thread(shutil.rmtree, d)
    print(f"write {(t1 - t0) * 1e3:.1f} ms, read {(t2 - t1) * 1e3:.1f} ms")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 64 * 1024
    asyncio.run(main(n, size))
