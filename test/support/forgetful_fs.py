#!/usr/bin/python3
"""A FUSE file system that forgets every write not fsynced, as a power cut would.

    forgetful_fs.py BACKING MOUNTPOINT

Metadata (create, mkdir, rename, unlink, truncate, chmod) goes to BACKING at once. File data is held
in memory, per path, until fsync or fdatasync of that file writes it to BACKING and fsyncs it there.
Reads see the held data on top of BACKING's. Killing this process (SIGKILL) and unmounting loses
what was held: what is left in BACKING is what a disk would hold after a power cut, for a program
that trusted only its fsyncs. Data is never written back on close or on unmount.

Tests (test/integration/power-loss.test.ts) run ms-resume on the mount, cut the power, mount BACKING
again and check that nothing the journal claimed was lost. Single-threaded (nothreads): simple, and
ms-resume's files here are a few MiB.
"""
import errno
import os
import sys

from fusepy import FUSE, FuseOSError, Operations


class Held:
    """Writes to one file not yet synced: (offset, bytes) in order, and the size they make."""

    def __init__(self, size):
        self.writes = []
        self.size = size

    def write(self, data, offset):
        self.writes.append((offset, bytes(data)))
        self.size = max(self.size, offset + len(data))

    def truncate(self, length):
        kept = []
        for off, data in self.writes:
            if off < length:
                kept.append((off, data[: length - off]))
        self.writes = kept
        self.size = length

    def overlay(self, buf, offset):
        """`buf` holds BACKING's bytes from `offset` (zeros past its end): lays the held writes over it."""
        end = offset + len(buf)
        for off, data in self.writes:
            lo, hi = max(off, offset), min(off + len(data), end)
            if lo < hi:
                buf[lo - offset:hi - offset] = data[lo - off:hi - off]


class Forgetful(Operations):
    def __init__(self, root):
        self.root = root
        self.held = {}

    def _p(self, path):
        return os.path.join(self.root, path.lstrip('/'))

    # --- metadata, applied at once -------------------------------------------------------------
    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._p(path))
        except OSError as e:
            raise FuseOSError(e.errno)
        attrs = {k: getattr(st, k) for k in ('st_atime', 'st_ctime', 'st_gid', 'st_mode', 'st_mtime', 'st_nlink', 'st_size', 'st_uid', 'st_ino')}
        held = self.held.get(path)
        if held is not None:
            attrs['st_size'] = held.size
        return attrs

    def readdir(self, path, fh):
        return ['.', '..'] + os.listdir(self._p(path))

    def access(self, path, mode):
        if not os.access(self._p(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._p(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._p(path), times)

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)

    def rmdir(self, path):
        os.rmdir(self._p(path))

    def unlink(self, path):
        os.unlink(self._p(path))
        self.held.pop(path, None)

    def symlink(self, target, source):
        os.symlink(source, self._p(target))

    def readlink(self, path):
        return os.readlink(self._p(path))

    def rename(self, old, new):
        os.rename(self._p(old), self._p(new))
        self.held.pop(new, None)
        if old in self.held:
            self.held[new] = self.held.pop(old)

    def statfs(self, path):
        st = os.statvfs(self._p(path))
        return {k: getattr(st, k) for k in ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail', 'f_ffree', 'f_files', 'f_flag', 'f_frsize', 'f_namemax')}

    def truncate(self, path, length, fh=None):
        held = self.held.get(path)
        if held is not None:
            held.truncate(length)
        os.truncate(self._p(path), length)

    # --- files: data held until fsync ---------------------------------------------------------
    def open(self, path, flags):
        # O_DIRECT cannot pass: the data must stay here. ms-resume falls back to buffered writes.
        if flags & getattr(os, 'O_DIRECT', 0):
            raise FuseOSError(errno.EINVAL)
        fd = os.open(self._p(path), flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_APPEND))
        os.close(fd)
        if flags & os.O_TRUNC:
            self.truncate(path, 0)
        return 0

    def create(self, path, mode, fi=None):
        fd = os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.close(fd)
        return 0

    def _held(self, path):
        held = self.held.get(path)
        if held is None:
            held = Held(os.lstat(self._p(path)).st_size)
            self.held[path] = held
        return held

    def write(self, path, data, offset, fh):
        self._held(path).write(data, offset)
        return len(data)

    def read(self, path, size, offset, fh):
        held = self.held.get(path)
        end = held.size if held is not None else os.lstat(self._p(path)).st_size
        size = max(0, min(size, end - offset))
        with open(self._p(path), 'rb') as f:
            f.seek(offset)
            buf = bytearray(f.read(size))
        buf.extend(b'\0' * (size - len(buf)))
        if held is not None:
            held.overlay(buf, offset)
        return bytes(buf)

    def fsync(self, path, datasync, fh):
        held = self.held.pop(path, None)
        fd = os.open(self._p(path), os.O_WRONLY)
        try:
            if held is not None:
                if os.fstat(fd).st_size > held.size:
                    os.ftruncate(fd, held.size)
                for off, data in held.writes:
                    os.pwrite(fd, data, off)
                if os.fstat(fd).st_size < held.size:
                    os.ftruncate(fd, held.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0


if __name__ == '__main__':
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(Forgetful(os.path.abspath(backing)), mountpoint, foreground=True, nothreads=True, allow_other=True, default_permissions=True)
