"""`tljax verify` and `tljax run-instances` (through main_verify / main_run_instances)."""

import os

from tljax.verify._cli import main_run_instances, main_verify


def test_verify_prints_and_writes_the_result(benchmarks_dir, tmp_path, capsys):
    t = benchmarks_dir / "test"
    out = tmp_path / "result.txt"
    code = main_verify(
        [
            str(t / "onnx/test_nano.onnx"),
            str(t / "vnnlib/test_nano.vnnlib"),
            "--timeout",
            "60",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == "unsat\n"
    assert out.read_text() == "unsat\n"


def test_verify_sat_prints_the_assignment(benchmarks_dir, capsys):
    t = benchmarks_dir / "test"
    code = main_verify(
        [
            str(t / "onnx/test_sat.onnx"),
            str(t / "vnnlib/test_prop.vnnlib"),
            "--timeout",
            "60",
            "--check",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("sat\n((X_0 ") and "(Y_4 " in out and out.count("(X_") == 5


def test_verify_bad_inputs_exit_2(benchmarks_dir, tmp_path, capsys):
    t = benchmarks_dir / "test"
    assert main_verify([str(tmp_path / "missing.onnx"), str(t / "vnnlib/test_nano.vnnlib")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a 1-input property for a 5-input network
    assert main_verify([str(t / "onnx/test_sat.onnx"), str(t / "vnnlib/test_nano.vnnlib")]) == 2
    assert "n_inputs=5" in capsys.readouterr().err
    assert (
        main_verify(
            [str(t / "onnx/test_nano.onnx"), str(t / "vnnlib/test_nano.vnnlib"), "--timeout", "-1"]
        )
        == 2
    )


def _folder(tmp_path, benchmarks_dir, expected_nano):
    t = benchmarks_dir / "test"
    rows = [
        (t / "onnx/test_nano.onnx", t / "vnnlib/test_nano.vnnlib"),
        (t / "onnx/test_tiny.onnx", t / "vnnlib/test_tiny.vnnlib"),
    ]
    lines = [f"{os.path.relpath(a, tmp_path)},{os.path.relpath(b, tmp_path)},60" for a, b in rows]
    (tmp_path / "instances.csv").write_text("\n".join(lines) + "\n")
    exp = ["onnx,vnnlib,timeout_s,expected"] + [lines[0] + f",{expected_nano}", lines[1] + ",unsat"]
    (tmp_path / "expected.csv").write_text("\n".join(exp) + "\n")
    return tmp_path / "instances.csv"


def test_run_instances_table_and_summary(benchmarks_dir, tmp_path, capsys):
    csv_path = _folder(tmp_path, benchmarks_dir, "unsat")
    assert main_run_instances([str(csv_path), "--out", str(tmp_path / "res.csv")]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == 2
    assert "solved 2/2, wrong 0" in out
    assert (tmp_path / "res.csv").read_text().count("unsat") >= 2


def test_run_instances_flags_a_wrong_verdict(benchmarks_dir, tmp_path, capsys):
    csv_path = _folder(tmp_path, benchmarks_dir, "sat")  # deliberately wrong expectation
    assert main_run_instances([str(csv_path), "--limit", "1"]) == 1
    out = capsys.readouterr().out
    assert "WRONG" in out and "wrong 1" in out
