"""Bad input on the audit side: every file is checked for type before it is opened (a FIFO never
hangs the audit), malformed files are one line naming the file, and a crashed audit never leaves
an earlier verdict behind."""

import json
import os
import threading

import pytest

from lorarepro import audit
from lorarepro.audit import inputs, report


def test_fifo_is_named_and_never_opened(tmp_path):
    fifo = tmp_path / "adapter_model.safetensors"
    os.mkfifo(fifo)
    assert inputs.problem(fifo) == "a FIFO, not a regular file"
    done = threading.Event()

    def read():
        with pytest.raises(inputs.BadInput, match="adapter_model.safetensors: a FIFO"):
            inputs.read_json(fifo)
        done.set()

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(5)
    assert done.is_set(), "reading a FIFO blocked"  # open() on a FIFO without a writer never returns


def test_special_files_under_a_tree_and_broken_links(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "ok.json").write_text("{}")
    os.mkfifo(tmp_path / "a" / "b" / "test.parquet")
    (tmp_path / "a" / "gone").symlink_to(tmp_path / "nowhere")
    (tmp_path / "a" / "link.json").symlink_to(tmp_path / "a" / "ok.json")  # a link to a regular file is fine
    found = inputs.special_files(tmp_path / "a", tmp_path / "absent")
    assert found == {tmp_path / "a" / "b" / "test.parquet": "a FIFO, not a regular file",
                     tmp_path / "a" / "gone": "a broken symlink"}


@pytest.mark.parametrize(("text", "expect", "message"), [
    ("{broken", dict, "not valid JSON (Expecting property name enclosed in double quotes, line 1 column 2)"),
    ("[1, 2]", dict, "JSON list, expected dict"),
    (b"\xff\xfe{}", dict, "not UTF-8 text"),
])
def test_malformed_json_is_one_line_naming_the_file(tmp_path, text, expect, message):
    path = tmp_path / "seed0.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(inputs.BadInput) as err:
        inputs.read_json(path, expect)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_guarded_check_turns_an_exception_into_a_failure_naming_the_file():
    def broken():
        raise ValueError("results/runs/t/m/seed0.json: result file is not valid JSON (x)")

    (rec,) = audit._guarded("tables", broken)
    assert (rec["check"], rec["status"], rec["file"]) == ("tables", "fail", "results/runs/t/m/seed0.json")
    assert rec["detail"].startswith("could not check: ValueError:")


def test_a_crashed_audit_removes_the_earlier_passed_report(tmp_path, monkeypatch, capsys):
    report_path, document = tmp_path / "report.md", tmp_path / "audit.json"
    report_path.write_text("# Audit: PASSED\n")
    document.write_text(json.dumps({"passed": True}))

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(audit, "run", crash)
    with pytest.raises(audit.AuditFailed, match="crashed: RuntimeError: boom"):
        audit.run_and_write({}, report_path, document)
    assert report_path.read_text().startswith("# Audit: FAILED") and not document.exists()
    assert "audit FAILED: it crashed: RuntimeError: boom" in capsys.readouterr().out


def test_a_pass_with_an_unchecked_source_says_so_and_strict_fails():
    records = [report.record("params", "pass", "r.json"),
               {**report.record("mlflow", "warn", "mlflow.db", "store not found"), "not_checked": "MLflow not checked (store absent)"}]
    loose = audit.summarize(records, [], audit.Options())
    assert loose["passed"] and report.render_markdown(loose).startswith("# Audit: PASSED — MLflow not checked (store absent)")
    assert report.summary(loose, "r", "d").startswith("audit PASSED — MLflow not checked (store absent)")
    assert not audit.summarize(records, [], audit.Options(strict=True))["passed"]
