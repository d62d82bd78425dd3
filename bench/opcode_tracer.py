"""A pytest plugin for the benchmarks' ``--opcodes`` modes: counts the Python opcodes run
from collection's end on, per code file, into the JSON file ``$BENCH_OPCODES_OUT``."""

import json
import os
import sys

_counts = {}


def _tracer(frame, event, arg):
    frame.f_trace_opcodes = True
    frame.f_trace_lines = False
    if event == "opcode":
        name = frame.f_code.co_filename
        _counts[name] = _counts.get(name, 0) + 1
    return _tracer


def pytest_collection_finish(session):
    sys.settrace(_tracer)


def pytest_sessionfinish(session):
    sys.settrace(None)
    with open(os.environ["BENCH_OPCODES_OUT"], "w") as out:
        json.dump(_counts, out)
