# Telemetry outbox: messages queued while the broker is unreachable, also
# across reboots and power cuts, are delivered after reconnect; none lost and
# none corrupted.
# On flash it is a folder of append-only segment files, `<first seq>.log`.
# Each record is a header (payload length u16, seq u32, CRC32 u32; little
# endian) and the payload; the CRC covers length, seq and payload. put()
# opens the newest segment, appends, and closes it before it returns the seq:
# on littlefs (VfsLfs2) a file's data is committed when it is closed, so a
# seq the caller has got is on flash. A power cut during put() can leave at
# most one torn record at the tail of the newest segment: loading finds it by
# its length or CRC, ignores it (that put never returned) and seals the
# segment, so later records go into a new one and are never written after
# garbage. Every read checks the CRC again.
# `acked` holds (seq acknowledged up to, messages dropped, CRC32). It is
# written whole to `acked.tmp` and renamed over `acked` (atomic on littlefs
# and POSIX; where a rename is not atomic, a valid `acked.tmp` is read too).
# A segment all of whose records are acknowledged is deleted, so delivered
# messages are never sent again. Sequence numbers continue after a restart:
# the next is one past both the highest stored record and the acked seq.
# When full (max_bytes of records), the oldest segment, a quarter of
# max_bytes, is dropped to make room for new readings; the messages in it
# not yet delivered are counted in stats()["dropped"], which also persists.
# Provisions: ETSI EN 303 645 5.9-1 (resilience to network and power
# outages), 5.9-2 (the device keeps working, and recording, while offline);
# EU CRA Annex I (2)(h).
import binascii
import errno
import os
import struct

_HDR = 10  # struct "<HII": length, seq, crc
_ACKED = "acked"
MAX_PAYLOAD = 2048  # also bounds what a corrupt length field can make us read


def _crc(n, seq, payload):
    return binascii.crc32(payload, binascii.crc32(struct.pack("<HI", n, seq)))


class Outbox:
    def __init__(self, path="/data/outbox", max_bytes=65536):
        if max_bytes < 4 * (_HDR + 16):
            raise ValueError("max_bytes too small")
        self.path = path.rstrip("/")
        self.max_bytes = max_bytes
        self.seg_max = max_bytes // 4
        self.max_payload = min(self.seg_max - _HDR, MAX_PAYLOAD)
        self._torn = 0
        self._hint = None  # (segment, seq, offset) where pending() may resume
        self._load()

    def _p(self, name):
        return self.path + "/" + name

    # -- loading ------------------------------------------------------------
    def _load(self):
        parts = self.path.split("/")
        for i in range(1 + (parts[0] == ""), len(parts) + 1):
            try:
                os.mkdir("/".join(parts[:i]))
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise
        self._acked, self._dropped = 0, 0
        for name in (_ACKED, _ACKED + ".tmp"):
            try:
                with open(self._p(name), "rb") as f:
                    b = f.read(12)
                a, d, c = struct.unpack("<III", b)
                if binascii.crc32(b[:8]) == c:
                    self._acked, self._dropped = max(a, self._acked), max(d, self._dropped)
            except (OSError, ValueError):
                pass  # missing or torn: the other copy, or nothing acked yet
        names = []
        for name in os.listdir(self.path):
            if name.endswith(".log") and name[:-4].isdigit():
                names.append(int(name[:-4]))
        names.sort()
        self._segs = []  # [first seq, last seq, file size], oldest first
        self._sealed = False
        last = 0
        for first in names:
            count, hi, end, size = self._scan(first)
            if not count:  # nothing valid: a torn first record, or garbage
                os.remove(self._seg_path(first))
                self._torn += 1 if size else 0
                continue
            if end != size:
                self._torn += 1
            self._sealed = end != size  # only the newest segment is written to
            self._segs.append([first, hi, size])
            last = hi
        self._next = max(last, self._acked) + 1
        self._compact()

    def _seg_path(self, first):
        return self._p("%010d.log" % first)

    def _scan(self, first):
        # (valid records, last valid seq, end of the valid records, file size)
        count, end = 0, 0
        with open(self._seg_path(first), "rb") as f:
            while True:
                rec = self._next_record(f, first + count)
                if rec is None:
                    break
                count += 1
                end += _HDR + len(rec[1])
            f.seek(0, 2)
            return count, first + count - 1, end, f.tell()

    def _next_record(self, f, seq):
        # (seq, payload) of the record at f's position if it is whole, its
        # CRC matches and it has the expected seq (a segment's records are
        # numbered on from its name); otherwise None.
        h = f.read(_HDR)
        if len(h) < _HDR:
            return None
        n, got, crc = struct.unpack("<HII", h)
        if n > MAX_PAYLOAD or got != seq:
            return None
        payload = f.read(n)
        if len(payload) < n or _crc(n, seq, payload) != crc:
            return None
        return seq, payload

    # -- writing ------------------------------------------------------------
    def _write_acked(self):
        b = struct.pack("<II", self._acked, self._dropped)
        tmp = self._p(_ACKED + ".tmp")
        with open(tmp, "wb") as f:
            f.write(b + struct.pack("<I", binascii.crc32(b)))
        os.rename(tmp, self._p(_ACKED))

    def _compact(self):
        # Deletes fully acknowledged segments, all but the one being written.
        while self._segs and self._segs[0][1] <= self._acked and \
                (len(self._segs) > 1 or self._sealed):
            os.remove(self._seg_path(self._segs.pop(0)[0]))
            if not self._segs:
                self._sealed = False

    def _bytes(self):
        return sum(s[2] for s in self._segs)

    def put(self, payload):
        """Stores one message; returns its sequence number once it is on flash."""
        n = len(payload)
        if n > self.max_payload:
            raise ValueError("payload too large")
        size = _HDR + n
        while len(self._segs) > 1 and self._bytes() + size > self.max_bytes:
            first, hi, _ = self._segs[0]  # full: drop the oldest segment
            if hi > self._acked:
                self._dropped += hi - max(self._acked, first - 1)
                self._acked = hi
            self._write_acked()
            os.remove(self._seg_path(first))
            self._segs.pop(0)
        seq = self._next
        new = not self._segs or self._sealed or self._segs[-1][2] + size > self.seg_max
        # A new segment's name is a seq no valid record has: "wb" only ever
        # truncates the remains of a put that failed.
        try:
            with open(self._seg_path(seq if new else self._segs[-1][0]), "wb" if new else "ab") as f:
                f.write(struct.pack("<HII", n, seq, _crc(n, seq, payload)) + payload)
        except OSError:
            self._sealed = not new  # part of a record may be there: append no more
            raise
        if new:
            self._segs.append([seq, seq, size])
            self._sealed = False
        else:
            seg = self._segs[-1]
            seg[1], seg[2] = seq, seg[2] + size
        self._next = seq + 1
        return seq

    def pending(self, limit=16):
        """Up to `limit` stored messages not yet acknowledged, oldest first,
        as (seq, payload)."""
        out = []
        for first, hi, _ in self._segs:
            if hi <= self._acked:
                continue
            seq, offset = first, 0
            h = self._hint  # records before it were acknowledged already
            if h and h[0] == first:
                seq, offset = h[1], h[2]
            with open(self._seg_path(first), "rb") as f:
                f.seek(offset)
                while len(out) < limit:
                    pos = f.tell()
                    rec = self._next_record(f, seq)
                    if rec is None:
                        break
                    seq += 1
                    if rec[0] > self._acked:
                        if not out:
                            self._hint = (first, rec[0], pos)
                        out.append(rec)
            if len(out) >= limit:
                break
        return out

    def ack(self, seq):
        """Everything up to and including seq has been delivered."""
        seq = min(seq, self._next - 1)
        if seq <= self._acked:
            return
        self._acked = seq
        self._write_acked()
        self._compact()

    def stats(self):
        waiting = 0
        for first, hi, _ in self._segs:
            if hi > self._acked:
                waiting += hi - max(self._acked, first - 1)
        return {"next_seq": self._next, "acked": self._acked, "pending": waiting,
                "bytes": self._bytes(), "segments": len(self._segs),
                "dropped": self._dropped, "torn": self._torn}
