"""tools/fetch_weights.py against a local HTTP server (127.0.0.1) serving small files: checksums,
resuming a broken download with HTTP Range, files already in place, one-line errors."""

import hashlib
import http.server
import json
import os
import re
import threading

import pytest

from clipreid_plugin.utils.cli import run_tool

import fetch_weights  # tools/ is on the test path (setup.cfg)

FILES = {"/clip/RN50.pt": os.urandom(300_000), "/tv/resnet18-abcd.pth": os.urandom(150_000)}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves FILES with Range support; the first request of a path in ``break_once`` sends half the
    body and closes the connection (a dropped download)."""

    break_once = set()
    requests = []

    def do_GET(self):  # noqa: N802  (http.server's name)
        body = FILES.get(self.path)
        rng = self.headers.get("Range")
        type(self).requests.append((self.path, rng))
        if body is None:
            self.send_error(404)
            return
        start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        if start >= len(body):
            self.send_error(416)
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in self.break_once:
            self.break_once.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _table(tmp_path, base, **changes):
    table = {"clip-rn50": {"url": base + "/clip/RN50.pt", "sha256": hashlib.sha256(FILES["/clip/RN50.pt"]).hexdigest(),
                           "path": "~/.cache/clip/RN50.pt"},
             "resnet18": {"url": base + "/tv/resnet18-abcd.pth",
                          "sha256": hashlib.sha256(FILES["/tv/resnet18-abcd.pth"]).hexdigest()[:8],  # a prefix
                          "path": "~/.cache/torch/hub/checkpoints/resnet18-abcd.pth"}}
    for name, entry in changes.items():
        table[name].update(entry)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    return str(path)


def _run(argv, capsys):
    code = run_tool(lambda: fetch_weights.main(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fetch_resumes_a_broken_download_and_checks_the_files(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    table = _table(tmp_path, server)
    _Handler.break_once = {"/clip/RN50.pt"}
    code, out, err = _run(["--table", table], capsys)
    part = tmp_path / "home/.cache/clip/RN50.pt.part"
    assert code == 2 and "broke off after 150000 of 300000 bytes; run the same command again to resume" in err
    assert len(err.strip().splitlines()) == 2 and part.stat().st_size == 150_000  # message + debug hint
    code, out, err = _run(["--table", table], capsys)
    assert code == 0, err
    assert ("/clip/RN50.pt", "bytes=150000-") in _Handler.requests  # resumed, not restarted
    rn50 = tmp_path / "home/.cache/clip/RN50.pt"
    r18 = tmp_path / "home/.cache/torch/hub/checkpoints/resnet18-abcd.pth"
    assert rn50.read_bytes() == FILES["/clip/RN50.pt"] and r18.read_bytes() == FILES["/tv/resnet18-abcd.pth"]
    assert not part.exists()
    assert f"clip-rn50: wrote {rn50} (sha256 checked)" in out and f"resnet18: wrote {r18} (sha256 checked)" in out
    assert out.rstrip().endswith(f"Weights in place:\n  {rn50}\n  {r18}")
    # a second run finds both in place and downloads nothing
    _Handler.requests = []
    code, out, _ = _run(["--table", table, "resnet18"], capsys)
    assert code == 0 and _Handler.requests == [] and f"resnet18: already in place at {r18}" in out


def test_fetch_rejects_a_file_whose_checksum_differs(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    table = _table(tmp_path, server, resnet18={"sha256": "0" * 64})
    code, _, err = _run(["--table", table, "resnet18"], capsys)
    assert code == 2 and "has sha256 " + hashlib.sha256(FILES["/tv/resnet18-abcd.pth"]).hexdigest() in err
    assert "not the published " + "0" * 64 + "; it was deleted" in err
    assert not list((tmp_path / "home/.cache/torch/hub/checkpoints").iterdir())  # nothing left in place


@pytest.mark.parametrize("change, message", [
    ({"url": "/nothing-here.pt"}, "answered HTTP 404"),
    ({"url": "http://127.0.0.1:9/RN50.pt"}, "Cannot reach http://127.0.0.1:9/RN50.pt"),
])
def test_fetch_errors_are_one_line(server, tmp_path, monkeypatch, capsys, change, message):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if change["url"].startswith("/"):
        change = {"url": server + change["url"]}
    code, _, err = _run(["--table", _table(tmp_path, server, **{"clip-rn50": change}), "clip-rn50"], capsys)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    code, _, err = _run(["--table", _table(tmp_path, server), "clip-vit-b-16"], capsys)
    assert code == 2 and "Unknown weights clip-vit-b-16; known: clip-rn50, resnet18" in err


def test_the_built_in_table_puts_files_where_the_configs_read_them():
    """Every PRETRAIN_PATH of the shipped configs is a path of the table (the default set), and the
    published checksums are in the URLs / file names."""
    tool = fetch_weights
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    named = set()
    for root in ("configs", "projects/CLIPReID/configs"):
        for folder, _, files in os.walk(os.path.join(repo, root)):
            for f in files:
                with open(os.path.join(folder, f)) as fh:
                    named |= set(re.findall(r"PRETRAIN_PATH:\s*(\S+\.pth?)", fh.read()))
    default = {tool.WEIGHTS[n]["path"] for n in tool.CONFIG_WEIGHTS}
    assert named and named == default | set(tool.MANUAL_WEIGHTS)  # the rest have no URL with a checksum
    for entry in tool.WEIGHTS.values():
        assert entry["sha256"] in entry["url"] and entry["path"].endswith(entry["url"].rsplit("/", 1)[1])
    assert len(tool.WEIGHTS["clip-vit-b-16"]["sha256"]) == 64


def test_missing_weights_errors_point_to_the_tool_and_to_random_weights(tmp_path):
    """The CLIP and torchvision "not found" errors name the command that fetches the file (with the
    name this tool knows it by) and the key that trains from random weights instead."""
    from clipreid_plugin.config import get_cfg
    from clipreid_plugin.modeling import build_model
    from clipreid_plugin.plugins.clipreid.clip_weights import read_clip_checkpoint
    from clipreid_plugin.utils.errors import ToolkitError

    with pytest.raises(ToolkitError) as info:
        read_clip_checkpoint(str(tmp_path / "ViT-B-16.pt"))
    assert "`python tools/fetch_weights.py`" in str(info.value) and "MODEL.BACKBONE.PRETRAIN False" in str(info.value)
    cfg = get_cfg()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg.merge_from_file(os.path.join(repo, "configs/SyntheticReID/bagtricks_R18.yml"))
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", True, "MODEL.BACKBONE.PRETRAIN_PATH", str(tmp_path / "r18.pth"),
                         "MODEL.HEADS.NUM_CLASSES", 3, "MODEL.DEVICE", "cpu"])
    with pytest.raises(ToolkitError) as info:
        build_model(cfg)
    text = str(info.value)
    assert "`python tools/fetch_weights.py resnet18`" in text and "MODEL.BACKBONE.PRETRAIN False" in text
    assert "~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth" in text and "resnet18" in fetch_weights.WEIGHTS
