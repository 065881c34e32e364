import pytest

import minidiff as md


def test_profile_default_and_pick(monkeypatch):
    monkeypatch.delenv("MINIDIFF_PROFILE", raising=False)
    assert md.profile() == "default"
    monkeypatch.setenv("MINIDIFF_PROFILE", "smoke")
    assert md.profile() == "smoke"
    assert md.by_profile(smoke=1, default=2, full=3) == 1
    monkeypatch.setenv("MINIDIFF_PROFILE", "FULL")
    assert md.by_profile(smoke=1, default=2, full=3) == 3


def test_bad_profile(monkeypatch):
    monkeypatch.setenv("MINIDIFF_PROFILE", "fast")
    with pytest.raises(ValueError, match=r"MINIDIFF_PROFILE must be one of \('smoke', 'default', 'full'\); got 'fast'"):
        md.profile()
