"""The entry points' re-execution with glibc's huge-page tunable: when it applies, and that it happens once."""
import os
import subprocess
import sys

import pytest

from streetseg_jax import hugepages


@pytest.fixture
def thp_madvise(tmp_path):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    return str(path)


def test_wanted_only_where_the_kernel_leaves_huge_pages_to_madvise(tmp_path, thp_madvise, monkeypatch):
    monkeypatch.setattr(hugepages, "_glibc_with_hugetlb", lambda: True)
    assert hugepages.wanted({}, thp_madvise)
    for mode in ("[always] madvise never", "always madvise [never]"):
        (tmp_path / "other").write_text(mode)
        assert not hugepages.wanted({}, str(tmp_path / "other"))
    assert not hugepages.wanted({}, str(tmp_path / "missing"))
    monkeypatch.setattr(hugepages, "_glibc_with_hugetlb", lambda: False)
    assert not hugepages.wanted({}, thp_madvise)


def test_not_wanted_once_set_when_the_user_chose_a_value_or_opted_out(thp_madvise, monkeypatch):
    monkeypatch.setattr(hugepages, "_glibc_with_hugetlb", lambda: True)
    assert not hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, thp_madvise)
    assert not hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, thp_madvise)
    assert not hugepages.wanted({"STREETSEG_HUGE_PAGES": "0"}, thp_madvise)
    assert hugepages.wanted({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, thp_madvise)


def test_the_tunable_is_added_to_those_already_set():
    assert hugepages.environment_with_tunable({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    env = hugepages.environment_with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_peers_get_the_environment_without_it():
    env = hugepages.environment_without_tunable({"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert env == {"A": "1"}
    env = hugepages.environment_without_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}


@pytest.mark.skipif(not hugepages.wanted(), reason="huge pages by tunable do not apply on this machine "
                                                   "(needs Linux, glibc 2.35+ and THP in madvise mode)")
def test_a_command_runs_itself_again_once_with_the_tunable(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text("import os, sys\n"
                      "print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], flush=True)\n"
                      "from streetseg_jax import hugepages\n"
                      "hugepages.reexec_with_huge_pages()\n"
                      "print('main', flush=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "STREETSEG_HUGE_PAGES")}
    out = subprocess.run([sys.executable, str(script), "--flag", "a b"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 3 and out[2] == "main", out
    first, second = out[0].split(" ", 3), out[1].split(" ", 3)
    assert first[1] == second[1]                     # the same process, executed again
    assert first[2] == "None" and second[2] == "glibc.malloc.hugetlb=1"
    assert first[3] == second[3] == "['--flag', 'a b']"
