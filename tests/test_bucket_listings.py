"""A process that lists a bucket folder again sees the objects written since by others (gcsfs would
answer from its first listing): what resume and the evaluation watcher rely on."""

from __future__ import annotations

from jointist_jax import storage


def test_a_listing_sees_objects_another_client_wrote_since(gcs):
    import gcsfs

    bucket = gcs.new_bucket()
    folder = f"gs://{bucket}/run/checkpoints"
    storage.write_text(f"{folder}/1/commit_success.txt", "ok")
    assert [p.name for p in storage.path(folder).iterdir()] == ["1"]
    assert not (storage.path(folder) / "2").exists()

    another_process = gcsfs.GCSFileSystem(token="anon", skip_instance_cache=True)
    another_process.pipe(f"{bucket}/run/checkpoints/2/commit_success.txt", b"ok")

    assert sorted(p.name for p in storage.path(folder).iterdir()) == ["1", "2"]
    assert (storage.path(folder) / "2").is_dir()
    assert storage.file_sizes(f"{folder}/2") == {"commit_success.txt": 2}
