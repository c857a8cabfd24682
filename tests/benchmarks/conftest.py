"""The benchmarks are scripts (python -m tests.benchmarks.NAME), never collected as tests."""

collect_ignore_glob = ["*"]
