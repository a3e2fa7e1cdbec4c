"""Tests for data_prep.imagenet_folder: the class folders, their names and the photo split."""

from PIL import Image

from data_prep import imagenet_folder


def test_split_photos_disjoint_and_stable():
    photos = [f"/x/c/p{i}.JPEG" for i in range(10)]
    train, test = imagenet_folder.split_photos(photos, 0.2, seed=0)
    assert len(test) == 2 and len(train) == 8 and not set(train) & set(test)
    # A photo's side depends only on its own name: adding photos never moves existing ones
    # from test to train unless the quota changes.
    assert imagenet_folder.split_photos(photos, 0.2, seed=0) == (train, test)
    assert imagenet_folder.split_photos(photos[:2], 0.2, seed=0)[1] != []


def test_wnids_words_layout(tmp_path):
    (tmp_path / "train" / "n1").mkdir(parents=True)
    (tmp_path / "train" / "n2").mkdir(parents=True)
    (tmp_path / "train" / "extra").mkdir(parents=True)
    for w in ("n1", "n2"):
        Image.new("RGB", (4, 4)).save(tmp_path / "train" / w / "a.JPEG")
    (tmp_path / "wnids.txt").write_text("n1\nn2\n")
    (tmp_path / "words.txt").write_text("n0\tentity\nn1\tEgyptian cat\nn2\trocking chair, rocker\n")
    classes, unlisted = imagenet_folder.read_classes(str(tmp_path))
    assert [(c.wnid, c.synonyms, len(c.photos)) for c in classes] == [
        ("n1", ("Egyptian cat",), 1), ("n2", ("rocking chair", "rocker"), 1)]
    assert unlisted == ["extra"]


def test_choose_names_unique_with_fallbacks_without_vectors():
    classes = [imagenet_folder.ImageClass("n1", ("cat", "house cat"), ()),
               imagenet_folder.ImageClass("n2", ("cat", "tomcat"), ()),
               imagenet_folder.ImageClass("n3", ("a|b",), ())]  # '|' separates manifest labels
    names, notes = imagenet_folder.choose_names(classes)
    assert names == ["cat", "tomcat", None]
    reasons = {n["wnid"]: n["reason"] for n in notes}
    assert reasons["n2"].startswith("renamed: 'cat' is already class n1's")
    assert reasons["n3"] == "dropped: no usable name for any synonym"
