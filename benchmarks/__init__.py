"""Benchmarks: throughput of roundtrip's pieces as ratios against baselines measured in the same run.

``python -m benchmarks --size 1m`` (``make bench``). Each module measures one thing against its
baseline, interleaved and repeated on the same data and servers, so that other work on the
machine weighs on both sides alike; ratios, not absolute numbers, are what the targets judge.
Results print as a table and go to ``benchmarks/results/*.json``. See docs/benchmarks.md.
"""
