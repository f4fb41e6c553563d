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


def _nano(benchmarks_dir):
    t = benchmarks_dir / "test"
    return [str(t / "onnx/test_nano.onnx"), str(t / "vnnlib/test_nano.vnnlib"), "--timeout", "60"]


def test_check_says_when_the_recheck_passes(benchmarks_dir, capsys):
    assert main_verify([*_nano(benchmarks_dir), "--check"]) == 0
    out, err = capsys.readouterr()
    assert out == "unsat\n"
    assert "re-check passed" in err and "cover the input box" in err


def test_quiet_and_progress(benchmarks_dir, capsys):
    assert main_verify([*_nano(benchmarks_dir), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == "unsat\n" and err == ""
    # stderr is not a terminal here: no progress bar unless asked for
    assert main_verify(_nano(benchmarks_dir)) == 0
    err = capsys.readouterr().err
    assert "verify:" not in err and err.startswith("# unsat")
    assert main_verify([*_nano(benchmarks_dir), "--progress"]) == 0
    out, err = capsys.readouterr()
    assert out == "unsat\n" and "verify:" in err


def test_missing_file_is_named_relative_to_the_repository(capsys):
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[2]
    missing = repo / "no_such_dir" / "net.onnx"
    assert main_verify([str(missing), str(missing)]) == 2
    err = capsys.readouterr().err
    assert os.path.join("no_such_dir", "net.onnx") in err and str(repo) not in err


def _absorbing_onnx(path):
    """y = (x @ 1 + 2^24) @ 1 - 2^24 as ONNX: 0 in float32 for |x| <= 1, x exactly."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.ones((1, 1), np.float32), "w1"),
        numpy_helper.from_array(np.full((1,), 2.0**24, np.float32), "b1"),
        numpy_helper.from_array(np.ones((1, 1), np.float32), "w2"),
        numpy_helper.from_array(np.full((1,), -(2.0**24), np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "w2"], ["h2"]),
        helper.make_node("Add", ["h2", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "absorbing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_float32_only_violation_is_sat_and_said_plainly(tmp_path, capsys):
    net = tmp_path / "absorbing.onnx"
    _absorbing_onnx(net)
    spec = tmp_path / "prop.vnnlib"
    spec.write_text(
        "(declare-const X_0 Real) (declare-const Y_0 Real)\n"
        "(assert (>= X_0 0.5)) (assert (<= X_0 1.0)) (assert (<= Y_0 0.25))\n"
    )
    assert main_verify([str(net), str(spec), "--timeout", "30", "--check", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("sat\n((X_0 ") and "(Y_0 0.0)" in out
    assert "float32 execution and not in exact arithmetic" in err
    assert main_verify([str(net), str(spec), "--timeout", "3", "--semantics", "real"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] in ("unknown", "timeout")


def test_top_level_usage_lists_every_commands_options(capsys):
    from tljax._cli import _parsers, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd, parser in _parsers().items():
        assert f"  {cmd} " in out, cmd
        for action in parser._actions:
            if action.option_strings and "-h" not in action.option_strings:
                assert any(o in out for o in action.option_strings), (cmd, action.option_strings)
    for option in ("--tag", "--claim", "--audit", "--list", "--semantics", "--quiet", "--select"):
        assert option in out, option
