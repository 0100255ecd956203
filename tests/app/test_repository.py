import pytest

from app.repository import FolderRepository, RepositoryError, SingleCheckpoint
from tests.support.repository import add_version, write_config


def test_models_are_the_folders_and_versions_their_integer_subfolders(tmp_path):
    add_version(tmp_path, "seg", 1)
    add_version(tmp_path, "seg", 12)
    add_version(tmp_path, "other", 3)
    (tmp_path / "notes.txt").write_text("ignored")
    repo = FolderRepository(tmp_path)
    entry = repo.read("seg")
    assert repo.names() == ["other", "seg"]
    assert entry is not None and sorted(entry.versions) == [1, 12]
    assert entry.versions[12] == tmp_path / "seg" / "12" / "model.pt"
    assert entry.problems == [] and entry.broken == {}


@pytest.mark.parametrize("name", ["latest", "0", "01", "-1"])
def test_a_version_folder_not_named_by_a_positive_integer_is_a_problem(tmp_path, name):
    add_version(tmp_path, "seg", 1)
    (tmp_path / "seg" / name).mkdir()
    entry = FolderRepository(tmp_path).read("seg")
    assert entry is not None and list(entry.versions) == [1]
    assert entry.problems == [f"{tmp_path / 'seg' / name}: version folders must be named by a "
                              "positive integer (1, 2, ...); ignored"]


def test_a_version_folder_without_weights_is_broken_with_its_reason(tmp_path):
    (tmp_path / "seg" / "2").mkdir(parents=True)
    entry = FolderRepository(tmp_path).read("seg")
    assert entry is not None and entry.broken == {2: f"{tmp_path / 'seg' / '2'}: no model.pt "
                                                     "in the version folder"}


def test_an_empty_model_folder_says_what_it_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    entry = FolderRepository(tmp_path).read("empty")
    assert entry is not None and "no version folders" in entry.problems[0]


def test_an_unusable_config_leaves_the_model_without_config_and_says_why(tmp_path):
    add_version(tmp_path, "seg", 1)
    write_config(tmp_path, "seg", colour="blue")
    entry = FolderRepository(tmp_path).read("seg")
    assert entry is not None and entry.config is None
    assert "unknown key 'colour'" in entry.problems[0]


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_an_unreadable_repository_is_an_error_naming_it(tmp_path, kind):
    root = tmp_path / "repo"
    if kind == "file":
        root.write_text("")
    with pytest.raises(RepositoryError, match=str(root)):
        FolderRepository(root).names()


@pytest.mark.parametrize("name", ["nope", "..", ".hidden"])
def test_reading_a_model_that_is_not_a_folder_gives_none(tmp_path, name):
    assert FolderRepository(tmp_path).read(name) is None


def test_one_checkpoint_is_a_model_named_after_its_stem_at_version_1(tmp_path):
    path = add_version(tmp_path, "x", 1).rename(tmp_path / "roads.pt")
    repo = SingleCheckpoint(path, pinned_sha256="ab" * 32)
    entry = repo.read("roads")
    assert repo.names() == ["roads"] and entry is not None
    assert entry.versions == {1: path} and entry.config.sha256 == {1: "ab" * 32}
