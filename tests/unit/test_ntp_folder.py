"""The lab NTP server's folder in a shared /tmp (as a user, not root): a folder someone else made
first, or one open to others, is refused, so nobody can hand chronyd their configuration."""
from __future__ import annotations

import os

import pytest

from sbd_harness.lab import ntp


def test_a_folder_open_to_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ntp.os, "geteuid", lambda: os.getuid() if os.getuid() else 1000)
    monkeypatch.setattr(ntp.tempfile, "gettempdir", lambda: str(tmp_path))
    if os.getuid() == 0:  # root owns what it makes here: pretend to be the user 1000 seeing root's folder
        with pytest.raises(ntp.NtpError, match="not a folder of this user's own"):
            ntp._state_dir("127.0.0.1", 10123)
        return
    parent = tmp_path / f"sbd-ntp-{os.getuid()}"
    parent.mkdir(mode=0o777)
    parent.chmod(0o777)
    with pytest.raises(ntp.NtpError, match="not a folder of this user's own"):
        ntp._state_dir("127.0.0.1", 10123)
    parent.chmod(0o700)
    assert ntp._state_dir("127.0.0.1", 10123).is_dir()
