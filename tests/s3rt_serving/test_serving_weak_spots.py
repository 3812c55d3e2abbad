"""Issue 22, weak spots: `s3rt stream` on files, reports when a run or stream stops early, one-line
errors, the umask, frames folders with clashing or unreadable entries, client-visible errors, and
the bounds on what one request may make the server say or hold."""

from __future__ import annotations

import errno
import json
import math
import os
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("grpc", reason="serving tests need the serve extra (grpcio)")

from s3rt_serving.serving_helpers import make_clip, save_frames  # noqa: E402
from s3rt.cli.main import main  # noqa: E402
from s3rt.errors import InputError  # noqa: E402
from s3rt.runtime.serving import FrameFailed, ServingLimits, StreamOptions, StreamSession  # noqa: E402
from s3rt.runtime.tracker import Tracker  # noqa: E402


@pytest.fixture(scope="module")
def server(backend):
    from s3rt.runtime.serving.grpc.server import ServerConfig, build_server
    srv = build_server(backend, limits=ServingLimits(max_streams=3, max_objects=4, idle_timeout_s=None),
                       defaults=StreamOptions(deadline_ms=500), config=ServerConfig(port=0)).start()
    yield srv
    srv.stop()


@pytest.fixture
def clip(tmp_path):
    frames, mask = make_clip(16, seed=5)
    folder = save_frames(tmp_path / "clip", frames)
    first = tmp_path / "first.png"
    Image.fromarray(mask.astype(np.uint8), mode="L").save(first)
    return folder, first


def test_stream_from_a_folder_processes_every_frame_unless_paced(server, clip, tmp_path):
    """A newcomer's first `s3rt stream --frames clip/` used to get masks for 3 of 16 frames."""
    folder, first = clip
    out = tmp_path / "out"
    assert main(["stream", "--server", f"127.0.0.1:{server.port}", "--frames", str(folder), "--mask", str(first),
                 "--out", str(out)]) == 0
    assert len(list(out.glob("0*.png"))) == 16
    report = json.loads((out / "stream_report.json").read_text())
    assert report["status"] == "complete" and report["every_frame"] and report["results"] == 16
    assert report["dropped_total"] == 0 and report["not_processed"] == []


def test_stream_report_is_written_when_the_server_goes_away(backend, clip, tmp_path, capsys):
    from s3rt.runtime.serving.grpc.server import ServerConfig, build_server
    folder, first = clip
    srv = build_server(backend, limits=ServingLimits(max_streams=1, idle_timeout_s=None),
                       config=ServerConfig(port=0)).start()
    threading.Timer(1.0, srv.stop).start()
    out = tmp_path / "out"
    rc = main(["stream", "--server", f"127.0.0.1:{srv.port}", "--frames", str(folder), "--mask", str(first),
               "--out", str(out), "--fps", "5"])                       # paced: still sending when the server stops
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the stream ended early (server_error" in err[0], err
    report = json.loads((out / "stream_report.json").read_text())
    assert report["status"] == "server_error" and "UNAVAILABLE" in report["error"]
    assert 1 <= report["results"] < 16 and len(list(out.glob("0*.png"))) == report["results"]


def _run_args(model, folder, first, out):
    return ["run", "--model", str(model), "--backend", "onnxruntime", "--threads", "1", "--frames", str(folder),
            "--mask", str(first), "--out", str(out), "--no-progress"]


def test_run_writes_its_report_on_ctrl_c_and_on_a_full_disk(tiny_model, clip, tmp_path, monkeypatch, capsys):
    import s3rt.runtime.io.files as files
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.offline.pipeline import run_clip
    from s3rt.runtime.io.files import iter_frame_folder, read_mask
    folder, first = clip
    seen = []

    def stop_at_four(frame, result):
        seen.append(frame.name)
        if len(seen) == 4:
            raise KeyboardInterrupt
    with OnnxRuntimeBackend(tiny_model, threads=1) as b, pytest.raises(KeyboardInterrupt):
        run_clip(Tracker(b), iter_frame_folder(folder), first_mask=read_mask(first)[0], out_dir=tmp_path / "cc",
                 progress=False, on_result=stop_at_four)
    report = json.loads((tmp_path / "cc" / "report.json").read_text())
    assert report["status"] == "interrupted" and report["frames"] == 3 and report["object_ids"] == [1, 2]

    real_replace = os.replace

    def full_after_five(src, dst):
        if str(dst).endswith(".png") and len(list((tmp_path / "full").glob("*.png"))) >= 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)
    monkeypatch.setattr(files.os, "replace", full_after_five)
    assert main(_run_args(tiny_model, folder, first, tmp_path / "full")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "00005.png" in err[0], err
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    assert report["status"] == "failed" and report["frames"] == 5 and "disk is full" in report["error"]
    assert not list((tmp_path / "full").glob(".*.part"))               # no temporary file left behind


def test_unwritable_output_folder_and_binary_manifest_are_one_line_errors(tiny_model, clip, tmp_path, capsys):
    folder, first = clip
    assert main(_run_args(tiny_model, folder, first, "/proc/s3rt-no-such-folder/out")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the output folder" in err[0], err
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "manifest.json").write_bytes(bytes(range(256)) * 4)
    assert main(["serve", "--model", str(binary), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not valid JSON (binary data" in err[0], err


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_masks_are_written_with_the_users_umask(tmp_path, umask):
    from s3rt.runtime.io.files import save_npy, write_index_mask
    old = os.umask(umask)
    try:
        write_index_mask(tmp_path / "m.png", np.zeros((4, 4), np.int64), None)
        save_npy(tmp_path / "p.npy", np.zeros(3))
    finally:
        os.umask(old)
    for name in ("m.png", "p.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_frame_folders_refuse_clashing_stems_and_list_what_is_no_image(tiny_model, clip, tmp_path):
    from s3rt.runtime.io.files import scan_frames
    folder, first = clip
    os.mkfifo(folder / "00016.png")                                   # a FIFO would block a read forever
    (folder / "00017.png").mkdir()
    os.symlink(folder / "00018.png", folder / "00018.png")             # a symlink loop
    listing = scan_frames(folder)
    assert len(listing.files) == 16
    assert [(p.name, why) for p, why in listing.skipped] == [
        ("00016.png", "a FIFO, not an image file"), ("00017.png", "a folder, not an image file"),
        ("00018.png", "a symlink loop")]
    out = tmp_path / "out"
    assert main(_run_args(tiny_model, folder, first, out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 16 and [b["frame"] for b in report["bad_frames"]["skipped"]] == ["00016", "00017",
                                                                                               "00018"]
    Image.open(folder / "00009.png").save(folder / "00009.PNG")
    with pytest.raises(InputError, match=r"00009.PNG, 00009.png: their masks would all be 00009.png"):
        scan_frames(folder)


def test_client_visible_decode_errors_carry_no_python_reprs_and_check_the_declared_encoding():
    from s3rt.runtime.serving.grpc import codec
    pb = codec.pb
    frame = np.zeros((8, 8, 3), np.uint8)
    png = codec.encode_frame(frame, "png").data
    cases = [(pb.Image(data=b"not an image at all", encoding=pb.ENCODING_PNG), "not a PNG or JPEG file"),
             (pb.Image(data=png, encoding=pb.ENCODING_JPEG), "declared jpeg but the data is PNG")]
    for image, message in cases:
        with pytest.raises(InputError) as err:
            codec.decode_frame(image)
        assert message in str(err.value) and "0x" not in str(err.value) and "<" not in str(err.value)
    from s3rt.errors import ObjectIdError
    from s3rt.runtime.serving.objects import request_mask
    for bad in (np.full((4, 4), -1, np.int32), np.full((4, 4), 70000, np.int64)):
        with pytest.raises(ObjectIdError, match=r"mask values must be 0..65535 \(0 = no object\)"):
            request_mask(bad, None, (4, 4))
    with pytest.raises(InputError, match="mask values must be in 0..65535"):
        codec.encode_mask(np.full((4, 4), -3, np.int32))


def test_requests_cannot_make_the_server_say_or_hold_much(server):
    """NaN/inf deadlines and long or unprintable stream names are refused when the stream opens; an
    error that echoes ids names a few; a remove of 10^6 ids is refused by its count."""
    from s3rt.runtime.serving.grpc.client import Client, ServerError
    from s3rt.errors import CapacityError, ObjectIdError
    with Client(f"127.0.0.1:{server.port}", timeout_s=10) as c:
        for kw, message in ((dict(deadline_ms=math.nan), "finite"), (dict(deadline_ms=math.inf), "finite"),
                            (dict(name="x" * 300), "at most 256 printable characters"),
                            (dict(name="cam\n0"), "control characters")):
            with pytest.raises(ServerError, match="INVALID_ARGUMENT") as err:
                c.stream(**kw)
            assert message in err.value.details
        frames, mask = make_clip(2)
        with c.stream(every_frame=True, name="ok") as s:
            s.add_objects(mask, frames[0])
            with pytest.raises(CapacityError, match="remove names 200000 ids") as err:
                s.remove_objects([f"id{i}" for i in range(200_000)], timeout=120)
            assert len(str(err.value)) < 200
            with pytest.raises(ObjectIdError) as err:
                s.remove_objects(["a", "b", "c", "d"])
            assert len(str(err.value)) < 200
            ids = {v: f"object-{v}" for v in range(1, 1000)}
            with pytest.raises(CapacityError) as err:
                s.add_objects(mask, frames[1], ids=ids)
            assert len(str(err.value)) < 200


def test_an_every_frame_stream_that_is_never_read_is_bounded_like_a_live_one(backend):
    s = StreamSession(Tracker(backend, max_short_side=None),
                      StreamOptions.every_frame(max_unread_outputs=8), threaded=True)
    for i in range(40):                                   # bad frames the client never reads the errors of
        if s.closed:
            break
        s.report(FrameFailed(i, 0.0, "InputError", "undecodable"))
        s.drain(10)
    assert s.closed and "stopped reading" in s.closed_reason
    assert s.counters.received < 40
