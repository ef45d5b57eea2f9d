"""The embedded ``weed`` gets a bounded Go thread count, unless the operator chose one."""

from __future__ import annotations

import os

from cli.embedded import seaweed_environment, weed_socket_paths


def test_go_threads_are_a_quarter_of_the_cores_and_at_least_one() -> None:
    cores = len(os.sched_getaffinity(0))
    env = seaweed_environment({"PATH": "/usr/bin"})
    assert env["GOMAXPROCS"] == str(max(1, cores // 4))
    assert env["PATH"] == "/usr/bin"


def test_an_operators_gomaxprocs_wins() -> None:
    assert seaweed_environment({"GOMAXPROCS": "6"})["GOMAXPROCS"] == "6"


def test_socket_paths_follow_weeds_naming() -> None:
    paths = {str(p) for p in weed_socket_paths({"master": 11000, "filer": 11002, "s3": 11003})}
    assert paths == {
        "/tmp/seaweedfs-master-grpc-21000.sock",
        "/tmp/seaweedfs-filer-grpc-21002.sock",
        "/tmp/seaweedfs-s3-grpc-21003.sock",
        "/tmp/seaweedfs-filer-11002.sock",
        "/tmp/seaweedfs-s3-11003.sock",
    }
