"""The OSF download path, exercised against a local copy of an OSF-style listing (file:// URLs)."""

from __future__ import annotations

import json

import pytest
from conftest import ab_table

from pushgen.data.download import UPWORTHY_FILE, UPWORTHY_NODE, fetch_upworthy, osf_file_url


def _fake_osf(root, payload_name=UPWORTHY_FILE):
    """An OSF API tree: the node listing has a folder and a next page; the file sits on page 2 of the folder."""
    api = root / "api"
    data = root / "blob.csv"
    ab_table(n_tests=2).to_csv(data, index=False)
    node = api / "nodes" / UPWORTHY_NODE / "files" / "osfstorage"
    node.mkdir(parents=True)
    folder1, folder2 = root / "folder1.json", root / "folder2.json"
    (node / "index.json").write_text(json.dumps({
        "data": [{"attributes": {"kind": "file", "name": "README.txt"}, "links": {"download": "file:///nope"}},
                 {"attributes": {"kind": "folder", "name": "data"},
                  "relationships": {"files": {"links": {"related": {"href": folder1.as_uri()}}}}}],
        "links": {"next": None}}))
    folder1.write_text(json.dumps({"data": [], "links": {"next": folder2.as_uri()}}))
    folder2.write_text(json.dumps({"data": [{"attributes": {"kind": "file", "name": payload_name},
                                             "links": {"download": data.as_uri()}}], "links": {}}))
    return api, data


def test_finds_and_downloads_the_archive_through_folders_and_pages(tmp_path, monkeypatch):
    api, data = _fake_osf(tmp_path)
    # file:// has no directory index: map ".../osfstorage/" to its index.json
    import pushgen.data.download as dl
    real = dl._get_json
    monkeypatch.setattr(dl, "_get_json", lambda url, t: real(url + "index.json" if url.endswith("/") else url, t))
    assert osf_file_url(UPWORTHY_NODE, UPWORTHY_FILE, api=api.as_uri()) == data.as_uri()
    out = fetch_upworthy(tmp_path / "dest", api=api.as_uri())
    assert out.read_bytes() == data.read_bytes()
    assert not list((tmp_path / "dest").glob(".*part"))          # no half-written file left


def test_missing_file_in_project_is_a_clear_error(tmp_path, monkeypatch):
    api, _ = _fake_osf(tmp_path, payload_name="other.csv")
    import pushgen.data.download as dl
    real = dl._get_json
    monkeypatch.setattr(dl, "_get_json", lambda url, t: real(url + "index.json" if url.endswith("/") else url, t))
    with pytest.raises(FileNotFoundError, match=UPWORTHY_FILE):
        osf_file_url(UPWORTHY_NODE, UPWORTHY_FILE, api=api.as_uri())
