import pytest

from course_lib.course import NOTEBOOK_DIR, NOTEBOOKS, PARTS, get_notebook


def test_numbers_are_consecutive_and_slugs_unique():
    assert [nb.number for nb in NOTEBOOKS] == list(range(len(NOTEBOOKS)))
    assert len({nb.slug for nb in NOTEBOOKS}) == len(NOTEBOOKS)


def test_prerequisites_come_earlier():
    for nb in NOTEBOOKS:
        assert all(0 <= need < nb.number for need in nb.needs), nb
        assert nb.part in PARTS
    # every notebook but the first needs something, so the map is connected
    assert all(nb.needs for nb in NOTEBOOKS[1:])


def test_get_notebook_by_any_name():
    nb = get_notebook(4)
    assert get_notebook("04") is nb and get_notebook("4") is nb
    assert get_notebook("attention") is nb and get_notebook("04_attention.ipynb") is nb
    assert get_notebook("04_attention") is nb
    assert nb.path == NOTEBOOK_DIR / "04_attention.ipynb"
    with pytest.raises(KeyError, match="no notebook 'transformers' in the course; known: 00_start_here"):
        get_notebook("transformers")
    with pytest.raises(KeyError):
        get_notebook(99)


def test_every_notebook_file_is_on_the_map():
    files = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert files, "no notebooks found"
    on_map = {nb.filename for nb in NOTEBOOKS}
    assert set(files) <= on_map, f"not on the course map: {set(files) - on_map}"
    assert NOTEBOOKS[0].available
