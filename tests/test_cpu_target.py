"""The reference stack's CPU target: both llama.cpp builds compile for the same fixed target,
never for the machine they happen to run on (harness.cpu_target)."""
from pathlib import Path

import pytest

from harness import cpu_target
from harness.run import server_build


def test_x86_64_target_is_v3_without_avx512_or_amx():
    opts = cpu_target.ggml_options("x86_64")
    assert opts["GGML_NATIVE"] == "OFF"
    assert all(opts[k] == "ON" for k in ("GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"))
    assert all(opts[k] == "OFF" for k in ("GGML_AVX512", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"))


def test_other_architectures_build_the_baseline():
    assert cpu_target.ggml_options("aarch64") == {"GGML_NATIVE": "OFF"}


def test_llama_server_builds_for_the_same_target_as_the_wheel():
    for k, v in cpu_target.ggml_options().items():
        assert server_build.DEFAULT_CMAKE_OPTIONS[k] == v


def test_cmake_args_string_carries_every_option():
    args = cpu_target.cmake_args("x86_64").split()
    assert sorted(args) == sorted(f"-D{k}={v}" for k, v in cpu_target.ggml_options("x86_64").items())
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args


def test_pinned_version_reads_the_lock(tmp_path: Path):
    lock = tmp_path / "c.txt"
    lock.write_text("# comment\nfoo==1\nllama-cpp-python==0.3.36  # the binding\n")
    assert cpu_target.pinned_version(lock) == "0.3.36"
    lock.write_text("foo==1\n")
    with pytest.raises(SystemExit, match="no pin for llama_cpp_python"):
        cpu_target.pinned_version(lock)


def test_wheel_cache_is_keyed_by_the_build_options(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    a = cpu_target.wheel_dir("0.3.36")
    assert a.parent == tmp_path / "wheels" and a.name.startswith("llama-cpp-python-0.3.36-")
    monkeypatch.setattr(cpu_target, "cmake_args", lambda machine=None: "-DGGML_NATIVE=ON")
    assert cpu_target.wheel_dir("0.3.36") != a
    assert cpu_target.wheel_dir("0.3.37") != a


def test_user_cmake_args_are_part_of_the_key_but_a_compiler_launcher_is_not(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    plain = cpu_target.wheel_dir("0.3.36")
    monkeypatch.setenv("CMAKE_ARGS", "-DCMAKE_C_COMPILER_LAUNCHER=/x/ccache -DCMAKE_CXX_COMPILER_LAUNCHER=/x/ccache")
    assert cpu_target.wheel_dir("0.3.36") == plain
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_BLAS=ON")
    assert cpu_target.wheel_dir("0.3.36") != plain


def test_pip_subcommand_passes_the_target_options_to_pip(monkeypatch, tmp_path: Path):
    # a real pip: `pip --version` does not read CMAKE_ARGS, so the check is on the environment
    # handed to it, with the user's CMAKE_ARGS after the target's (the user's option wins)
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_BLAS=ON")
    env = cpu_target.pip_env()
    assert env["CMAKE_ARGS"].startswith(cpu_target.cmake_args()) and env["CMAKE_ARGS"].endswith("-DGGML_BLAS=ON")
    assert cpu_target.main(["pip", "--version"]) == 0


def test_no_native_llama_cpp_python_install_outside_the_target():
    # every place that may compile llama-cpp-python goes through harness.cpu_target
    root = Path(__file__).resolve().parents[1]
    tox = (root / "tox.ini").read_text()
    make = (root / "Makefile").read_text()
    assert "pip install --upgrade --no-deps llama-cpp-python" not in tox
    assert "harness.cpu_target pip install" in tox
    lock_recipe = make.split("\nlock:", 1)[1].split("\n\n", 1)[0]
    assert "harness.cpu_target pip install" in lock_recipe
