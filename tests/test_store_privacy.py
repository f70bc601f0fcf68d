"""Who can read the books: segments are the owner's alone (0600), readers map them read-only, and no name
reaches /dev/shm that is not a plain namespace and exchange."""

import os
import stat
import subprocess

import pytest

from mdengine.engine.configfile import ConfigError, check_namespace
from mdengine.store import SegmentReader, SegmentWriter, shm

NOBODY = 65534
WORLD_PYTHON = "/usr/bin/python3"


@pytest.fixture
def segment(namespace):
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=1, book_capacity=4, trade_capacity=8)
    slot = w.add_symbol("SPOT", "BTC-USDT", "BTC/USDT")
    w.publish_book(slot, [(100.0, 1.0)], [(101.0, 2.0)], update_id=1)
    yield w
    w.close()


def test_a_segment_is_owned_by_its_creator_with_mode_0600(segment):
    st = os.stat(os.path.join(shm.SHM_DIR, segment.name))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(WORLD_PYTHON, os.X_OK), reason="needs root and a system Python")
def test_another_user_cannot_open_a_segment(segment):
    code = f"open({os.path.join(shm.SHM_DIR, segment.name)!r}, 'rb')"
    out = subprocess.run([WORLD_PYTHON, "-I", "-c", code], user=NOBODY, group=NOBODY, extra_groups=[],
                         capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode != 0 and "PermissionError" in out.stderr, out.stderr


def test_a_reader_maps_the_segment_read_only(segment, namespace):
    with SegmentReader(namespace, "okx") as reader:
        with pytest.raises(TypeError):
            reader.view.buf[0] = 0  # the memoryview is read-only ...
        path = os.path.join(shm.SHM_DIR, segment.name)
        with open("/proc/self/maps") as fh:  # ... and so is the mapping itself (no "w" for the kernel either)
            perms = [line.split()[1] for line in fh if line.rstrip().endswith(path)]
        assert len(perms) >= 2  # the writer's mapping and the reader's
        assert "r--s" in perms and "rw-s" in perms
        assert reader.book("BTC/USDT").top() == (100.0, 1.0, 101.0, 2.0)


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "UPPER", "x" * 13, "ns\n", "ns\0", "n s", "ns-x", "é"])
def test_bad_namespaces_and_exchange_names_never_reach_dev_shm(bad):
    with pytest.raises(ValueError, match="must be 1-12 characters"):
        shm.segment_name(bad, "okx")
    with pytest.raises(ValueError, match="must be 1-12 characters"):
        shm.segment_name("default", bad)
    with pytest.raises(ConfigError, match="namespace: expected 1-12 characters|namespace is empty"):
        check_namespace("namespace", bad)
