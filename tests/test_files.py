"""course_lib.files.write_atomically: all or nothing."""
import os

import pytest

from course_lib.files import write_atomically


def test_writes_the_file_creating_its_folder(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    assert write_atomically(path, lambda tmp: open(tmp, "w").write("hello")) == path
    assert path.read_text() == "hello"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_replaces_in_one_step_and_keeps_a_reader_s_old_copy(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    link = tmp_path / "reader.txt"
    os.link(path, link)  # a reader holding the old file keeps seeing the old contents
    write_atomically(path, lambda tmp: open(tmp, "w").write("new"))
    assert path.read_text() == "new" and link.read_text() == "old"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def half_then_fail(tmp):
        open(tmp, "w").write("ha")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_the_mode_can_be_chosen(tmp_path):
    path = write_atomically(tmp_path / "x", lambda tmp: open(tmp, "w").write("x"), mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
